# image: foundry-inference-predictive
# image: foundry-inference-predictive-cuda (--build-arg ACCELERATOR=cuda)
# The predictive (ONNX) model server the operator runs for predictive deployments (`foundry-inference
# predictive-server`, command set by the operator). Build from the repository root:
#   docker build -f docker/predictive.Dockerfile -t ghcr.io/foundry-inference/foundry-inference-predictive:0.1.0 .
#   docker build -f docker/predictive.Dockerfile --build-arg ACCELERATOR=cuda \
#     -t ghcr.io/foundry-inference/foundry-inference-predictive-cuda:0.1.0 .
ARG BASE=python:3.11-slim
FROM ${BASE} AS build
# Debian's own python3 (a debootstrap base, tests/kube/images.py) marks its site-packages as externally managed
ENV PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY foundry_inference foundry_inference
COPY operator operator
COPY apps apps
COPY auth auth
# the locked requirements (scripts/lock-images.sh): every version pinned, every file's SHA-256 checked
COPY docker/requirements/predictive.txt /wheels/requirements.txt
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${BASE}
ARG ACCELERATOR=cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONSAFEPATH=1 HOME=/tmp \
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
# image decoding (Pillow) and the fast HTTP path (httptools, uvloop, orjson); CUDA builds swap in onnxruntime-gpu
# with its CUDA/cuDNN runtime wheels
RUN pip install --no-cache-dir --require-hashes --no-deps -r /wheels/requirements.txt \
 && pip install --no-cache-dir --no-deps /wheels/*.whl \
 && pip check \
 && if [ "$ACCELERATOR" = "cuda" ]; then \
      pip uninstall -y onnxruntime && pip install --no-cache-dir "onnxruntime-gpu[cuda,cudnn]"; \
    fi \
 && rm -rf /wheels
USER 65532:65532
WORKDIR /tmp
EXPOSE 8000
ENTRYPOINT ["foundry-inference", "predictive-server"]
