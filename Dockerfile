# The detection worker (and the trc CLI) as an image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/trc
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY agents_bridge ./agents_bridge
COPY app ./app
RUN pip install '.[rocksdb]' \
    && useradd --system --uid 10001 --home-dir /var/lib/trc --create-home trc
USER trc
ENV TRC_WEB_HOST=0.0.0.0 TRC_DATA_DIR=/var/lib/trc
EXPOSE 6066
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6066/healthz', timeout=2)"
ENTRYPOINT ["trc"]
CMD ["worker"]
