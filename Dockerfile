# The one image every service of docker-compose.yml runs: producer, workers, compile worker, Flower.
#
#   docker compose build                                  # CPU torch (the default)
#   docker compose build --build-arg TORCH_VARIANT=cu128  # NVIDIA GPUs (or QWEN3B_TORCH_VARIANT=cu128 in .env)
#
# TORCH_VARIANT is a folder of the PyTorch wheel index (cpu, cu126, cu128, ...): pick the newest CUDA
# that the hosts' driver supports (nvidia-smi, top right). CUDA wheels carry their own CUDA
# libraries, so the base image stays plain Python; the NVIDIA container toolkit injects the driver.
# VACC hosts mount the vendor runtime at run time (docker-compose.yml, worker-vacc0).
FROM python:3.11-slim-bookworm

ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TOKENIZERS_PARALLELISM=false

# torch first, from the variant's index: the largest layer, rebuilt only when the variant changes.
RUN pip install --index-url "${TORCH_INDEX}/${TORCH_VARIANT}" "torch==${TORCH_VERSION}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY common ./common
COPY producer ./producer
COPY workers ./workers
# tiny: random-weight demo models; onnx: the compile worker; tools: VACC compile configs; cluster: Flower.
RUN pip install ".[tiny,onnx,int8,tools,cluster,signing,s3,gcs]"

# Not root: results are written as this user (docker-compose.yml `user:` maps it to the owner of
# the output folder on the host).
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin qwen3b
USER 10001
CMD ["workers", "--help"]
