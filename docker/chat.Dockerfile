# image: foundry-inference-chat
# image: foundry-inference-chat-cuda (--build-arg ACCELERATOR=cuda)
# The OpenAI-compatible chat + transcription server the operator runs for generative deployments
# (`foundry-inference chat-server`): onnxruntime-genai for chat models, faster-whisper for speech recognition.
# BASE (build argument): any Debian-based image with python3 and pip (default python:3.11-slim; the test cluster
# uses a debootstrap bookworm with Debian's python3). Build from the repository root:
#   docker build -f docker/chat.Dockerfile -t ghcr.io/foundry-inference/foundry-inference-chat:0.1.0 .
#   docker build -f docker/chat.Dockerfile --build-arg ACCELERATOR=cuda \
#     -t ghcr.io/foundry-inference/foundry-inference-chat-cuda:0.1.0 .
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
COPY docker/requirements/chat.txt /wheels/requirements.txt
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${BASE}
ARG ACCELERATOR=cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONSAFEPATH=1 HOME=/tmp \
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --require-hashes --no-deps -r /wheels/requirements.txt \
 && pip install --no-cache-dir --no-deps /wheels/*.whl \
 && pip check \
 && if [ "$ACCELERATOR" = "cuda" ]; then \
      pip uninstall -y onnxruntime onnxruntime-genai \
      && pip install --no-cache-dir onnxruntime-genai-cuda "onnxruntime-gpu[cuda,cudnn]" nvidia-cublas-cu12; \
    fi \
 && rm -rf /wheels
USER 65532:65532
WORKDIR /tmp
EXPOSE 5000
ENTRYPOINT ["foundry-inference", "chat-server"]
