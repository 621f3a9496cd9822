"""Score with inferline models inside your own Spark jobs (``pip install 'inferline[spark]'``).

    from inferline.spark import udf
    predict = udf("fraud", version="3")
    df.withColumn("score", predict(*feature_columns)).select("id", "score.*")

Each Spark Python worker loads the model once and keeps it; rows get the same
validation and answers as online serving. See docs/batch.md.
"""

from __future__ import annotations

from inferline.batch.spark import udf

__all__ = ["udf"]
