# The API, the listener and the writer share one image; compose picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY cdc_listener ./cdc_listener
COPY mescache ./mescache
COPY writer ./writer
COPY sql ./sql
# Editable, so the package finds sql/ beside it.
RUN pip install --no-cache-dir -e .
USER nobody
