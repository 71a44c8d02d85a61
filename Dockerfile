# syntax=docker/dockerfile:1
# leadgen-kpi-stream: the Kafka stream processor (`kpi-stream worker`) and its tools (topics, generate, ...).
# The base image is pinned by full tag; bump both stages together.

FROM python:3.11.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas/ schemas/
COPY stream/ stream/
RUN pip install .


FROM python:3.11.11-slim-bookworm

# KPI_WEB_HOST: in a container /metrics must listen on every interface to be scraped.
# KPI_DATA_DIR: the tables' local files (KPI_STORE=disk://, the default), under the service user's home, which
# is a volume: a restarted container reads only the changelogs past what the files hold. Mount a named volume
# (or a persistent volume) there so that the files also outlive the container.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KPI_WEB_HOST=0.0.0.0 \
    KPI_DATA_DIR=/var/lib/kpi-stream

RUN groupadd --system --gid 10001 kpi \
 && useradd --system --uid 10001 --gid kpi --home-dir /var/lib/kpi-stream --create-home \
        --shell /usr/sbin/nologin kpi

COPY --from=build /opt/venv /opt/venv

WORKDIR /var/lib/kpi-stream
USER 10001:10001
VOLUME ["/var/lib/kpi-stream"]

# Faust's web server: /metrics (KPI_WEB_PORT).
EXPOSE 6066

ENTRYPOINT ["kpi-stream"]
CMD ["worker"]
