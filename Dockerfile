# One image for every seedq process: workers, beat, Flower, `seedq events`, the simulator.
# No ENTRYPOINT: docker-compose.yml gives each service its command.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 seedq \
    && useradd --system --uid 10001 --gid seedq --create-home --home-dir /home/seedq seedq

# The dependencies first, from the lock: each at its pinned version and checked against
# its hashes (README.md, "Development", says how to refresh it), in a layer that a change
# to the code alone does not rebuild.
WORKDIR /src
COPY requirements.lock ./
RUN pip install --require-hashes --requirement requirements.lock

# Then the project alone (.dockerignore keeps .env, .venv and tests out). PyAV's
# manylinux wheels bundle FFmpeg, so no system ffmpeg or compiler is installed.
COPY pyproject.toml README.md ./
COPY seedq ./seedq
COPY producer ./producer
COPY worker ./worker
COPY simulator ./simulator
COPY provider ./provider
COPY storage ./storage
COPY cli ./cli
RUN pip install --no-deps . && rm -rf /src

# The working directory is where Settings looks for an optional .env and where a local
# output directory or beat's schedule file would go: the user's own home.
USER seedq
WORKDIR /home/seedq
