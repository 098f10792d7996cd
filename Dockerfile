# fleethub server image. Build: docker build -t fleethub .
# Configure with FLEETHUB_* environment variables (see docs/production.md).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app fleethub
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER fleethub
# Inside a container the server must listen on all interfaces so the
# published port reaches it; the host side decides what is exposed.
ENV FLEETHUB_HOST=0.0.0.0 \
    FLEETHUB_PORT=8000 \
    FLEETHUB_LOG_FORMAT=json
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["fleethub", "serve"]
