# rlhf-studio: web, worker and trainer in one image (CPU torch).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 RLHF_DATA_DIR=/data
WORKDIR /srv/rlhf-studio
# The CPU wheel of torch first: a plain `torch` requirement would pull the CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md alembic.ini ./
COPY app app
COPY trainer trainer
COPY migrations migrations
COPY templates templates
COPY static static
RUN pip install -e .
VOLUME /data
EXPOSE 8000
CMD ["rlhf", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
