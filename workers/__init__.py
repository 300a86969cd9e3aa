"""Workers: run embedding and rerank batches on one device each."""
