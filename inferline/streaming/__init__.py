"""Stream inference: score messages as they arrive, with no message lost.

    inferline stream fraud --source 'redis://localhost:6379/0?stream=tx' \\
        --sink 'redis://localhost:6379/0?stream=scores' --group scorers

One loop (:class:`Consumer`) serves every broker and both patterns: the model in
process (:class:`EmbeddedScorer`) or calls to the serving API
(:class:`EnricherScorer`). See docs/streaming.md.
"""

from inferline.streaming.consumer import Broker, Consumer, DeadLetter, Result, Scorer
from inferline.streaming.messages import Delivery, Parsed, Scored
from inferline.streaming.run import run

__all__ = [
    "Broker",
    "Consumer",
    "DeadLetter",
    "Delivery",
    "Parsed",
    "Result",
    "Scored",
    "Scorer",
    "run",
]
