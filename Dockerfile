FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config config
COPY registry registry
COPY optout optout
COPY manage.py ./
RUN pip install --no-cache-dir . && DJANGO_DEBUG=1 python manage.py collectstatic --noinput
RUN useradd --system --uid 1000 optout
USER optout
EXPOSE 8000
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]
