# syntax=docker/dockerfile:1
# The tipstream worker image. `docker compose up` builds it and runs it twice: once as
# `tipstream db migrate`, then as `tipstream worker` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    TIPSTREAM_LOG_FORMAT=json \
    TIPSTREAM_WEB_HOST=0.0.0.0

# A fixed numeric uid, so an orchestrator can verify "not root" without reading /etc/passwd.
RUN groupadd --system --gid 10001 tipstream \
 && useradd --system --uid 10001 --gid tipstream --create-home --home-dir /home/tipstream \
            --shell /usr/sbin/nologin tipstream

WORKDIR /tmp/tipstream-src

# Dependencies first, read from pyproject.toml alone: this layer (numpy, scikit-learn, river,
# faust: most of the image) is rebuilt only when the dependency list changes, not on every edit.
# The README comes along because pyproject.toml names it as the package's long description.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
open('/tmp/requirements.txt', 'w').write(chr(10).join(deps))" \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The project itself, installed from pyproject.toml like any user would; its dependencies are
# already satisfied by the layer above. The source tree is removed so nothing shadows the
# installed package.
COPY streams ./streams
COPY agents ./agents
COPY models ./models
COPY schemas ./schemas
RUN pip install . \
 && cd / && rm -rf /tmp/tipstream-src

WORKDIR /home/tipstream
USER 10001:10001

# The web endpoints bind 0.0.0.0 in the image (TIPSTREAM_WEB_HOST above), so Prometheus and the
# orchestrator reach /metrics/, /health and /ready. The HEALTHCHECK is liveness: the process and its
# event loop answer /health (readiness, /ready, is what docker-compose.yml and a Kubernetes
# readinessProbe use). python, not curl: the slim image has no curl.
EXPOSE 6066
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('TIPSTREAM_WEB_PORT', '6066'), timeout=4)"]
CMD ["tipstream", "worker"]
