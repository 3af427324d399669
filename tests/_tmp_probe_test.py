import numpy as np
from tests.test_properties import servicer, model_infer, pb, INPUT, doubled, CONTENTS_FIELD
def test_p(servicer):
    for dt, vals in [("UINT64", [2**63]), ("UINT64", [2**64-1, 1]), ("FP32", [float("nan")]), ("FP32", [1e-45]), ("INT64", [2**63-1, -2**63]), ("FP64", [float("-nan")]), ("BOOL", [True])]:
        request = pb.ModelInferRequest(model_name="model")
        e = request.inputs.add(name=INPUT, datatype=dt, shape=[len(vals)])
        getattr(e.contents, CONTENTS_FIELD[dt]).extend(vals)
        try:
            r = model_infer(servicer, request)
            exp = doubled(np.array(vals, dtype={"UINT64": "<u8", "FP32": "<f4", "INT64": "<i8", "FP64": "<f8", "BOOL": "?"}[dt]))
            print("PROBE", dt, vals, r.raw_output_contents[0] == exp.tobytes(), np.frombuffer(r.raw_output_contents[0], exp.dtype), exp)
        except Exception as x:
            print("PROBE", dt, vals, "EXC", type(x).__name__, str(x)[:100])
