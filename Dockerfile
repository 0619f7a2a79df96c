# Hugging Face Space (sdk: docker) or any container host (HTTP or HTTPS): the Streamlit app on CPU.
FROM python:3.11-slim

RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
RUN useradd -m -u 1000 user
USER user
ENV HOME=/home/user PATH=/home/user/.local/bin:$PATH PYTHONUNBUFFERED=1
WORKDIR /home/user/app

# As scripts/install.sh: current pip and setuptools first (the base image's have advisories), CPU
# wheels of the tested torch release (a small image), the engine, then torchattacks without its
# stale requests pin.
RUN pip install --no-cache-dir --user --upgrade pip setuptools \
 && pip install --no-cache-dir --user "torch==2.14.1" "torchvision==0.29.1" --index-url https://download.pytorch.org/whl/cpu
COPY --chown=user . .
RUN pip install --no-cache-dir --user -e . && pip install --no-cache-dir --user --no-deps "torchattacks==3.5.1"

EXPOSE 8501
# `python app.py` is `streamlit run app.py` with the engine's imports started before the first visitor;
# inside a Space (SPACE_ID set) it adds the cross-site XSRF cookie the Spaces iframe (HTTPS) needs for
# uploads, and only there: that cookie is HTTPS-only, so over plain HTTP it would refuse every upload.
# The XSRF check stays on. scripts/space_smoke.sh starts the app with these same options.
HEALTHCHECK CMD curl --fail http://localhost:8501/_stcore/health || exit 1
ENTRYPOINT ["python", "app.py", "--server.port=8501", "--server.address=0.0.0.0", "--server.headless=true"]
