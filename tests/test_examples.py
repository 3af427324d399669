"""The two worked examples of the README, built by their scripts and served by
`python -m predictor --model_dir ...` alone: images and sentences in, on V1, V2 JSON, V2
binary and gRPC, each answer compared with the model run directly in torch on the same
decoded tensors."""

from __future__ import annotations

import base64
import io
import json
import re
import runpy
import shlex
import subprocess
import sys

import numpy as np
import pytest
import requests
import torch
import tritonclient.http as httpclient
from PIL import Image

from tests.serving import REPO_ROOT, PredictorProcess

pytestmark = pytest.mark.slow

EXAMPLES = REPO_ROOT / "examples"
IMAGES = ["red.jpg", "green.png", "blue.webp"]
SENTENCES = ["the service was quick and right", "it crashed and lost the data", "great"]


README = REPO_ROOT / "README.md"
SERVE_OPTIONS = {"cnn": ["--max_batch_size", "8"], "sentiment": []}


def readme_blocks(heading: str) -> list[tuple[str, str]]:
    """The (language, code) blocks of one README section."""
    section = README.read_text().split(f"### {heading}\n", 1)[1]
    section = re.split(r"\n##+ ", section, maxsplit=1)[0]
    return re.findall(r"```(sh|python)\n(.*?)```", section, re.S)


def run_readme_example(heading: str, server, model_dir, example: str) -> list[str]:
    """Checks the README's serve command is the one under test and runs its client commands
    against that server: what each printed."""
    outputs = []
    for language, code in readme_blocks(heading):
        code = code.replace(f"examples/{example}/model", str(model_dir))
        code = code.replace("localhost:8080", f"127.0.0.1:{server.http_port}")
        if language == "python":
            command = [sys.executable, "-c", code]
        else:
            for line in re.sub(r"\\\n\s*", " ", code).splitlines():
                words = shlex.split(line.split("#")[0]) if "curl" not in line else []
                if "-m" in words and "predictor" in words:
                    options = words[words.index("predictor") + 1 :]
                    name = options[options.index("--model_name") + 1]
                    assert options == [
                        "--model_dir",
                        str(model_dir),
                        "--model_name",
                        name,
                        *SERVE_OPTIONS[name],
                    ]
            curls = [
                line
                for line in re.sub(r"\\\n\s*", " ", code).splitlines()
                if line.startswith("curl ")
            ]
            if not curls:
                continue
            command = ["bash", "-c", "\n".join(f"{c}; echo" for c in curls)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    return outputs


def build(example: str, out) -> None:
    runpy.run_path(str(EXAMPLES / example / "build.py"), run_name="build")["build"](out)


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("image-model")
    build("image_classifier", out)
    with PredictorProcess(out, model_name="cnn", extra_args=SERVE_OPTIONS["cnn"]) as server:
        yield server, out


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("text-model")
    build("text_classifier", out)
    with PredictorProcess(out, model_name="sentiment") as server:
        yield server, out


def torch_logits_for_images(model_dir, names: list[str]) -> np.ndarray:
    """The exported CNN on the images as the server's decoder turns them into tensors."""
    from predictor.images import ImageDecoder

    settings = json.loads((model_dir / "model.json").read_text())["inputs"][0]["image"]
    decoder = ImageDecoder.from_settings("image", settings, "test")
    encoded = np.empty(len(names), dtype=object)
    encoded[:] = [(model_dir / name).read_bytes() for name in names]
    (tensor,) = decoder.decode(encoded, lambda f, xs: [f(x) for x in xs]).values()
    module = torch.export.load(str(model_dir / "model.pt2")).module()
    with torch.no_grad():
        return module(torch.from_numpy(tensor)).numpy()


def torch_logits_for_text(model_dir, sentences: list[str]) -> np.ndarray:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    encodings = tokenizer.encode_batch(sentences)
    ids = torch.tensor([e.ids for e in encodings])
    mask = torch.tensor([e.attention_mask for e in encodings])
    module = torch.export.load(str(model_dir / "model.pt2")).module()
    with torch.no_grad():
        return module(ids, mask).numpy()


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


# ---------------------------------------------------------------- images


def test_the_readme_image_example_runs_as_printed(image_model):
    server, model_dir = image_model
    curl, python = run_readme_example(
        "Worked example: an image classifier", server, model_dir, "image_classifier"
    )
    expected = torch_logits_for_images(model_dir, ["red.jpg"])[0]
    labels = (model_dir / "labels.txt").read_text().split()
    (prediction,) = json.loads(curl)["predictions"]
    assert (
        prediction["index"] == int(np.argmax(expected))
        and prediction["label"] == labels[prediction["index"]]
    )
    assert abs(prediction["score"] - float(expected.max())) < 1e-5
    top = torch_logits_for_images(model_dir, IMAGES).argmax(1)
    for index in top:
        assert f":{index}:{labels[index]}'" in python


def test_image_metadata_says_clients_send_bytes(image_model):
    server, _ = image_model
    metadata = requests.get(f"{server.http_url}/v2/models/cnn").json()
    assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]


def test_images_on_v1_are_a_batch_answered_as_torch_would(image_model):
    server, model_dir = image_model
    expected = torch_logits_for_images(model_dir, IMAGES)
    body = {"instances": [b64((model_dir / name).read_bytes()) for name in IMAGES]}
    response = requests.post(f"{server.http_url}/v1/models/cnn:predict", json=body)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        np.array(response.json()["predictions"]), expected, rtol=1e-5, atol=1e-6
    )


def test_curl_with_a_file_as_the_readme_shows(image_model):
    server, model_dir = image_model
    result = subprocess.run(
        [
            "curl",
            "-sS",
            f"{server.http_url}/v1/models/cnn:predict",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"instances": [{"b64": "'
            + base64.b64encode((model_dir / "red.jpg").read_bytes()).decode()
            + '"}]}',
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    predictions = json.loads(result.stdout)["predictions"]
    np.testing.assert_allclose(
        predictions, torch_logits_for_images(model_dir, ["red.jpg"]), rtol=1e-5, atol=1e-6
    )


def test_images_through_tritonclient_http_binary(image_model):
    server, model_dir = image_model
    encoded = np.empty(len(IMAGES), dtype=object)
    encoded[:] = [(model_dir / name).read_bytes() for name in IMAGES]
    infer_input = httpclient.InferInput("image", [len(IMAGES)], "BYTES")
    infer_input.set_data_from_numpy(encoded, binary_data=True)
    client = httpclient.InferenceServerClient(server.http_target)
    output = httpclient.InferRequestedOutput("logits", binary_data=True)
    result = client.infer("cnn", [infer_input], outputs=[output])
    np.testing.assert_allclose(
        result.as_numpy("logits"), torch_logits_for_images(model_dir, IMAGES), rtol=1e-5, atol=1e-6
    )


def test_images_through_tritonclient_grpc(image_model):
    server, model_dir = image_model
    data = [base64.b64encode((model_dir / name).read_bytes()).decode() for name in IMAGES]
    result = server.triton_grpc(
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [3], "data": data}]}
    )
    np.testing.assert_allclose(
        np.array(result["outputs"]["logits"]["data"]),
        torch_logits_for_images(model_dir, IMAGES),
        rtol=1e-5,
        atol=1e-6,
    )


def encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b"not an image at all", "not a JPEG/PNG/WEBP image"),
        (encode(Image.new("RGB", (32, 32)), "PNG")[:60], "image 0"),
        (encode(Image.new("RGB", (8, 8)), "GIF"), "not a JPEG/PNG/WEBP image"),
        (encode(Image.new("L", (7000, 6000)), "PNG"), "more than the 40000000 this model accepts"),
    ],
    ids=["garbage", "truncated", "gif", "decompression-bomb"],
)
def test_bad_images_are_a_400_naming_the_input(image_model, payload, fragment):
    server, _ = image_model
    response = requests.post(
        f"{server.http_url}/v1/models/cnn:predict", json={"instances": [b64(payload)]}
    )
    assert response.status_code == 400, response.text
    assert "input 'image'" in response.json()["error"] and fragment in response.json()["error"]
    assert set(server.probes().values()) == {200}


def test_numbers_for_an_image_input_are_a_400(image_model):
    server, _ = image_model
    body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    response = requests.post(f"{server.http_url}/v2/models/cnn/infer", json=body)
    assert response.status_code == 400
    assert "expected encoded images" in response.json()["error"]


def test_concurrent_requests_of_several_images_each_all_complete(image_model):
    """More multi-image requests at once than the server has decode threads: a request
    waiting for its images' decoding must never hold up the decoding itself."""
    import concurrent.futures

    server, model_dir = image_model
    body = {"instances": [b64((model_dir / name).read_bytes()) for name in IMAGES * 3]}
    expected = torch_logits_for_images(model_dir, IMAGES * 3)

    def call(_):
        return requests.post(f"{server.http_url}/v1/models/cnn:predict", json=body, timeout=30)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, range(8)))
    for answer in answers:
        assert answer.status_code == 200
        np.testing.assert_allclose(answer.json()["predictions"], expected, rtol=1e-4, atol=1e-5)


def test_concurrent_image_requests_are_batched(image_model):
    import concurrent.futures

    server, model_dir = image_model
    body = {"instances": [b64((model_dir / "red.jpg").read_bytes())]}
    before = server.metric('predictor_batch_size_count{model="cnn"}') or 0.0
    rows_before = server.metric('predictor_batch_size_sum{model="cnn"}') or 0.0
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda _: requests.post(f"{server.http_url}/v1/models/cnn:predict", json=body),
                range(16),
            )
        )
    assert {a.status_code for a in answers} == {200}
    # Each answer is its own image's, whatever batch it rode in (float sums may differ
    # in the last bits between batch sizes).
    expected = torch_logits_for_images(model_dir, ["red.jpg"])
    for answer in answers:
        np.testing.assert_allclose(answer.json()["predictions"], expected, rtol=1e-4, atol=1e-5)
    # Every decoded image went through the batcher, in at most 16 forward calls.
    batches = (server.metric('predictor_batch_size_count{model="cnn"}') or 0.0) - before
    rows = (server.metric('predictor_batch_size_sum{model="cnn"}') or 0.0) - rows_before
    assert rows == 16 and 1 <= batches <= 16


# ---------------------------------------------------------------- text


def test_the_readme_text_example_runs_as_printed(text_model):
    server, model_dir = text_model
    (curls,) = run_readme_example(
        "Worked example: a text classifier", server, model_dir, "text_classifier"
    )
    v1, v2 = [json.loads(line) for line in curls.splitlines() if line.strip()]
    sentences = ["the service was quick", "it crashed and lost the data"]
    expected = torch_logits_for_text(model_dir, sentences)
    labels = (model_dir / "labels.txt").read_text().split()
    assert [p["label"] for p in v1["predictions"]] == [labels[i] for i in expected.argmax(1)]
    (output,) = v2["outputs"]
    great = torch_logits_for_text(model_dir, ["great latency"])[0]
    assert output["datatype"] == "BYTES" and output["shape"] == [1, 2]
    assert [entry.split(":")[2] for entry in output["data"]] == [
        labels[i] for i in np.argsort(-great)
    ]


def test_text_metadata_is_one_bytes_input(text_model):
    server, _ = text_model
    metadata = requests.get(f"{server.http_url}/v2/models/sentiment").json()
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]


def test_sentences_on_v1_and_v2_are_answered_as_torch_would(text_model):
    server, model_dir = text_model
    expected = torch_logits_for_text(model_dir, SENTENCES)
    v1 = requests.post(
        f"{server.http_url}/v1/models/sentiment:predict", json={"instances": SENTENCES}
    )
    assert v1.status_code == 200, v1.text
    np.testing.assert_allclose(np.array(v1.json()["predictions"]), expected, rtol=1e-5, atol=1e-5)
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": SENTENCES}]}
    v2 = requests.post(f"{server.http_url}/v2/models/sentiment/infer", json=body).json()
    (logits,) = v2["outputs"]
    assert logits["shape"] == [3, 2]
    np.testing.assert_allclose(
        np.array(logits["data"]).reshape(3, 2), expected, rtol=1e-5, atol=1e-5
    )


def test_sentences_through_tritonclient_binary_and_grpc(text_model):
    server, model_dir = text_model
    expected = torch_logits_for_text(model_dir, SENTENCES)
    encoded = np.empty(len(SENTENCES), dtype=object)
    encoded[:] = [s.encode() for s in SENTENCES]
    infer_input = httpclient.InferInput("text", [len(SENTENCES)], "BYTES")
    infer_input.set_data_from_numpy(encoded, binary_data=True)
    client = httpclient.InferenceServerClient(server.http_target)
    result = client.infer("sentiment", [infer_input])
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-5)
    data = [base64.b64encode(s.encode()).decode() for s in SENTENCES]
    grpc_result = server.triton_grpc(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": data}]}
    )
    np.testing.assert_allclose(
        np.array(grpc_result["outputs"]["logits"]["data"]), expected, rtol=1e-5, atol=1e-5
    )


def test_long_text_is_truncated_at_the_declared_length(text_model):
    server, model_dir = text_model
    long = " ".join(["quick"] * 200)
    response = requests.post(
        f"{server.http_url}/v1/models/sentiment:predict", json={"instances": [long]}
    )
    assert response.status_code == 200
    np.testing.assert_allclose(
        response.json()["predictions"],
        torch_logits_for_text(model_dir, [long]),
        rtol=1e-5,
        atol=1e-5,
    )


def test_bad_strings_are_a_400(text_model):
    server, _ = text_model
    not_utf8 = requests.post(
        f"{server.http_url}/v1/models/sentiment:predict", json={"instances": [b64(b"\xff\xfe")]}
    )
    assert not_utf8.status_code == 400 and "not UTF-8 text" in not_utf8.json()["error"]
    numbers = requests.post(
        f"{server.http_url}/v1/models/sentiment:predict", json={"instances": [1, 2]}
    )
    assert numbers.status_code == 400 and "expected text" in numbers.json()["error"]
    assert set(server.probes().values()) == {200}
