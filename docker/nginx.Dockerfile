# image: foundry-inference-nginx (optional)
# The TLS sidecar of model pods built from Debian's nginx-light, for clusters that cannot pull the official
# nginxinc/nginx-unprivileged image (the chart's default, images.roles.nginx). The operator runs it as
# `nginx -e stderr -c /etc/foundry/nginx/nginx.conf -g "daemon off;"` with its own configuration (pid and temp paths
# under the writable /tmp/nginx mount), as a non-root user with a read-only root filesystem.
# BASE (build argument): a Debian bookworm image. Build from the repository root:
#   docker build -f docker/nginx.Dockerfile -t ghcr.io/foundry-inference/foundry-inference-nginx:0.1.0 .
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /etc/nginx/sites-enabled/default
USER 65532:65532
WORKDIR /tmp
EXPOSE 8443
CMD ["nginx", "-e", "stderr", "-g", "daemon off;"]
