# The skewguard gateway (`skewguard serve`); the same image runs a model as `bentoml serve`.
#
#   podman build --format docker -t skewguard .                      state mounted at run time
#   podman run -v "$PWD/.skewguard:/var/lib/skewguard:U" -p 8000:8000 skewguard
#   podman build --format docker --target baked -t skewguard:baked .  state baked in (.skewguard/)
#
# (`docker build` works the same; podman needs `--format docker` to keep the HEALTHCHECK.)
# Stages: `deps` installs the dependencies into a venv from pyproject.toml's list alone, so
# editing the sources reuses that layer; `runtime` adds the sources and runs as a non-root user;
# `baked` adds a model store and Feast state; `gateway` (the default) expects them mounted.
# `runtime` builds on `deps` rather than `COPY --from` its venv: buildah copies and hashes a
# stage's files for every `COPY --from`, even a cached one, which cost minutes per rebuild
# for the 1.6 GB venv (only pip, setuptools and wheel come along: 15 MB).

# Only the runtime dependency list keys the slow layer below: a new dev tool or version
# number in pyproject.toml changes this stage's output, not requirements.txt.
FROM python:3.11-slim AS requirements
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt

FROM python:3.11-slim AS deps
ENV LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=requirements /tmp/requirements.txt /tmp/requirements.txt
# The pip cache survives between builds (a dependency change downloads only what changed);
# setuptools and wheel stay in the venv so the project installs editable without network.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade "pip>=24" "setuptools>=77" "wheel>=0.43" \
    && /opt/venv/bin/pip install -r /tmp/requirements.txt

FROM deps AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SKEWGUARD_HOME=/var/lib/skewguard \
    BENTOML_HOME=/var/lib/skewguard/bentoml \
    SKEWGUARD_HOST=0.0.0.0 \
    SKEWGUARD_PORT=8000 \
    DO_NOT_TRACK=1 \
    BENTOML_DO_NOT_TRACK=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false
# The optimized bytecode: `skewguard serve` runs under python -O (Feast's typeguard checks
# cost ~2.5 s of start-up otherwise; see skewguard/cli.py). One file of `whenever` is
# Python 3.12 syntax and fails to compile; 3.11 never imports it.
RUN rm /tmp/requirements.txt \
    && { python -O -m compileall -q -j 0 /opt/venv/lib > /dev/null || true; } \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/skewguard --shell /usr/sbin/nologin skewguard \
    && install -d -o skewguard -g skewguard /var/lib/skewguard
# The sources stay owned by root: the service can read them, not change them. The packages
# are folders beside skewguard/ (skewguard/<package> links to them), the examples too.
COPY pyproject.toml README.md /app/
COPY examples /app/examples
COPY skewguard /app/skewguard
COPY bentos /app/bentos
COPY featurestore /app/featurestore
COPY gateway /app/gateway
COPY monitoring /app/monitoring
COPY pipeline /app/pipeline
COPY predictionlog /app/predictionlog
RUN pip install --no-deps --no-build-isolation --no-cache-dir -e /app
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen(f'http://127.0.0.1:{os.environ[\"SKEWGUARD_PORT\"]}/healthz', timeout=4)"]
CMD ["skewguard", "serve"]

# Model store (bentoml/models, bentoml/cascade_aliases.json) and Feast state (feast/) of the
# build context's .skewguard/; .dockerignore lets nothing else of it in.
FROM runtime AS baked
COPY --chown=skewguard:skewguard .skewguard/ /var/lib/skewguard/

FROM runtime AS gateway
