"""The minimal FastAPI V2 endpoint: orjson, no validation, no metrics, no logs.

python fastapi_app.py MODELS_DIR PORT     (inside the fastapi venv)
"""

import sys
from pathlib import Path

import numpy as np
import onnxruntime
import orjson
import uvicorn
from fastapi import FastAPI, Request, Response

MODELS = Path(sys.argv[1])
app = FastAPI()
sessions = {}
for name in ("forest", "logreg"):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    sessions[name] = onnxruntime.InferenceSession(
        str(MODELS / f"{name}.onnx"), options, providers=["CPUExecutionProvider"]
    )


@app.get("/v2/health/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


@app.post("/v2/models/{model}/infer")
async def infer(model: str, request: Request) -> Response:
    doc = orjson.loads(await request.body())
    tensor = doc["inputs"][0]
    rows = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    label, probabilities = sessions[model].run(None, {"input": rows})
    outputs = [
        {"name": "label", "datatype": "INT64", "shape": list(label.shape), "data": label},
        {
            "name": "probabilities",
            "datatype": "FP32",
            "shape": list(probabilities.shape),
            "data": probabilities.ravel(),
        },
    ]
    body = {"model_name": model, "outputs": outputs}
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[2]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
