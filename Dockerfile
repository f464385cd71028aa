# The API, the listener and the writer share one image; compose picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY api ./api
COPY cdc_listener ./cdc_listener
COPY mescache ./mescache
COPY writer ./writer
# Not editable: the SQL is package data (mescache/sql), installed with the code.
RUN pip install --no-cache-dir -c constraints.txt .
USER nobody
