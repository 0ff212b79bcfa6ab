# lbproxy container image.
#
#   docker build -t lbproxy .
#   docker run --rm -p 8080:8080 -p 8404:8404 -v "$PWD/myconf:/etc/lbproxy:ro" lbproxy
#
# The default command runs every *.yaml in /etc/lbproxy/ (merged in lexical order); mount
# your own configuration directory there, with a `stats:` section on :8404 (HEALTHCHECK
# probes its /health). `docker run --rm -v ... lbproxy check -c /etc/lbproxy/` validates.

# --- build: wheels for lbproxy and all its dependencies -----------------------------------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Only what the wheel is built from, so editing tests or bench/ does not rebuild it.
COPY pyproject.toml setup.py README.md ./
COPY lbproxy ./lbproxy
# uvloop, httptools, aiohttp, pycares... come as manylinux wheels for CPython 3.11; gcc
# compiles lbproxy's own accelerator (setup.py) into its wheel, here and not in the image.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime: the wheels installed, no build tools, not root --------------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 lbproxy \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin lbproxy
# Bind-mount the wheels instead of COPYing them: they never become a layer of the image.
# --no-index: only the wheels built above, nothing fetched at this point.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl
# Default configuration: the example (proxy on :8080) plus the stats listener on :8404
# that HEALTHCHECK and orchestrators probe. Replace the whole directory with your own.
COPY conf/lbproxy.yaml /etc/lbproxy/lbproxy.yaml
COPY deploy/container-stats.yaml /etc/lbproxy/stats.yaml
USER 10001:10001
# Relative paths in the configuration (certificates, log files) resolve against the
# directory of the file naming them, whatever the working directory; this one is only
# where `docker exec` shells start.
WORKDIR /etc/lbproxy
EXPOSE 8080 8404
# lbproxy drains on SIGTERM (in-flight requests finish, up to 30 s): give `docker stop` a
# --time / stop_grace_period above that.
STOPSIGNAL SIGTERM
# slim has no curl: Python's urllib; any non-2xx or no answer exits 1 (unhealthy).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8404/health', timeout=2)"]
ENTRYPOINT ["lbproxy"]
CMD ["run", "-c", "/etc/lbproxy/"]
