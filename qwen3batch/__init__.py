"""qwen3-batch's Python API: embed and rerank large corpora with Qwen3-Embedding and Qwen3-Reranker
on a cluster of workers (or in this process), and small batches in memory.

    import qwen3batch as q3b

    job = q3b.submit("corpus.parquet", model="/models/Qwen3-Embedding-0.6B", out="/shared/out/emb")
    job.wait()
    table = job.read()
    vectors = q3b.embed(["a text"], model="/models/Qwen3-Embedding-0.6B")

See producer/api.py for every argument; README "Python API".
"""

from common.errors import Qwen3BatchError
from producer.api import Job, JobStatus, WaitTimeout, embed, open_job, rerank, submit

__all__ = ["Job", "JobStatus", "Qwen3BatchError", "WaitTimeout", "embed", "open_job", "rerank", "submit"]
