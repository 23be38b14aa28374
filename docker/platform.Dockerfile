# image: foundry-inference
# The operator, the control plane and the model fetcher (the init container of every model pod), from this
# repository's package. Build from the repository root:
#   docker build -f docker/platform.Dockerfile -t ghcr.io/foundry-inference/foundry-inference:0.1.0 .
# The chart runs `foundry-inference operator --store kubernetes` and `foundry-inference control-plane --store
# kubernetes --port 8080`; the operator's model pods run `python -m foundry_inference.operator.fetch` from it.
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
COPY docker/requirements/platform.txt /wheels/requirements.txt
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${BASE}
# PYTHONSAFEPATH: never put the working directory in front of the standard library
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONSAFEPATH=1 HOME=/tmp \
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
# install_requires only: the operator, control plane, model fetcher and auth proxy need no inference runtime
RUN pip install --no-cache-dir --require-hashes --no-deps -r /wheels/requirements.txt \
 && pip install --no-cache-dir --no-deps /wheels/*.whl \
 && pip check \
 && rm -rf /wheels
# the sample catalog and the CRDs, where the package looks for them outside a source tree
COPY charts/foundry-inference/files/catalog.json /opt/foundry-inference/catalog.json
COPY charts/foundry-inference/crds /opt/foundry-inference/crds
# numeric user: runAsNonRoot can verify it; the chart mounts /tmp (read-only root filesystem)
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["foundry-inference"]
CMD ["--help"]
