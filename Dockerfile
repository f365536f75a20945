# mockoai in a container: twistd in the foreground as PID 1, a non-root user,
# every setting from MOCKOAI_* environment variables (see docs/deployment.md).
#
#   docker build -t mockoai .
#   docker run --rm -p 3000:3000 -e MOCKOAI_WORKERS=2 mockoai
#   docker run --rm -p 3000:3000 mockoai --config /etc/mockoai/profiles/load.toml
#
# Options after the image name are appended to `twistd -n --pidfile= mockoai`.
# CPython 3.11, the interpreter the README's performance figures were measured
# on. BASE can name any Debian-based image with python3 and python3 -m venv
# (.ci/container builds on a local mmdebstrap bookworm: no registry there).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/mockoai
COPY . /src
RUN /opt/mockoai/bin/pip install /src \
    # Twisted caches its plugin index next to the plugins on first use; the
    # runtime user cannot write there, so build it now.
    && /opt/mockoai/bin/python -c \
        "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
    && /opt/mockoai/bin/twistd mockoai --help >/dev/null

FROM ${BASE}
COPY --from=build /opt/mockoai /opt/mockoai
COPY etc/profiles/ /etc/mockoai/profiles/
# A fixed numeric uid, so Kubernetes' runAsNonRoot can check it.
RUN groupadd --gid 10001 mockoai \
    && useradd --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin mockoai
USER 10001:10001
# --workers keeps its run directory (the workers' metric sockets) under /tmp.
WORKDIR /tmp
ENV PATH=/opt/mockoai/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MOCKOAI_LISTEN=tcp:3000 \
    MOCKOAI_WORKERS=1
EXPOSE 3000
# SIGTERM starts the drain: /health answers 503, requests in flight get
# --grace-period seconds (default 10); give `docker stop -t` more than that.
STOPSIGNAL SIGTERM
# No curl in slim images: the interpreter checks /health on MOCKOAI_LISTEN's
# first tcp port (503 while draining fails it).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, re, urllib.request; m = re.search(r'tcp:(\\d+)', os.environ.get('MOCKOAI_LISTEN', '')); urllib.request.urlopen('http://127.0.0.1:%s/health' % (m.group(1) if m else '3000'), timeout=2)"]
ENTRYPOINT ["twistd", "-n", "--pidfile=", "mockoai"]
CMD []
