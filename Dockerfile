FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY timers ./timers
RUN pip install . && useradd --create-home --uid 10001 timers
USER timers
EXPOSE 8080
CMD ["timers", "api"]
