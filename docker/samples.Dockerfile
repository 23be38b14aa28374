# image: foundry-inference-samples (optional)
# The model fetcher with the catalog's sample models inside, for clusters: the fetcher of a model pod cannot prepare
# a sample itself (no build libraries, often no network), so it copies the prebuilt folder (digests verified) from
# /opt/foundry-inference/samples/<name>/. Point the chart's `images.roles.model-fetcher` at it.
# The build context is a folder holding one sub-folder per sample as `foundry_inference.samples.prepare` leaves it
# (files + .sample.json); tests/kube/images.py makes it:
#   python -m foundry_inference.samples && <copy each prepared folder to CTX/samples/NAME>
#   docker build -f docker/samples.Dockerfile --build-arg PLATFORM=ghcr.io/foundry-inference/foundry-inference:0.1.0 CTX
ARG PLATFORM=ghcr.io/foundry-inference/foundry-inference:0.1.0
FROM ${PLATFORM}
COPY samples /opt/foundry-inference/samples
