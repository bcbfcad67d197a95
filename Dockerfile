# ketenstroom's own services (processor, sink) for docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ketenstroom ketenstroom
COPY producers producers
COPY processors processors
COPY sinks sinks
COPY cli cli
COPY partners partners
COPY schemas schemas
COPY terminology terminology
RUN pip install --no-cache-dir -e .
USER nobody
ENTRYPOINT []
