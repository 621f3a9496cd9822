"""KServe ModelServer serving the ONNX models over V2 (run inside the kserve venv)."""

import argparse
import logging
import uuid
from pathlib import Path

import kserve
import onnxruntime
from kserve import InferOutput, InferRequest, InferResponse
from kserve.utils.utils import from_np_dtype


class OnnxModel(kserve.Model):
    def __init__(self, name: str, path: Path) -> None:
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        self.names = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return True

    def predict(self, payload: InferRequest, headers=None) -> InferResponse:
        feed = {i.name: i.as_numpy() for i in payload.inputs}
        outputs = []
        for name, value in zip(self.names, self.session.run(self.names, feed), strict=True):
            output = InferOutput(name, list(value.shape), from_np_dtype(value.dtype))
            output.set_data_from_numpy(value, binary_data=False)
            outputs.append(output)
        return InferResponse(payload.id or str(uuid.uuid4()), self.name, outputs)


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--models", type=Path, required=True)
    args, _ = parser.parse_known_args()
    models = [OnnxModel(name, args.models / f"{name}.onnx") for name in ("forest", "logreg")]
    server = kserve.ModelServer()
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    server.start(models)


if __name__ == "__main__":
    main()
