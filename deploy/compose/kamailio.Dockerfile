# Kamailio from Debian, with the edge configuration mounted by compose.yaml.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends kamailio \
 && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["kamailio", "-DD", "-E", "-f", "/etc/kamailio/kamailio.cfg"]
