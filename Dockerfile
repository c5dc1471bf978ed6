# One image for the API and the workers; the command picks the role. It needs a Redis
# (REDIS_URL: the image has no redis-server) and real secrets: it listens on 0.0.0.0, so it
# refuses the example config's development fallbacks. Set at least RIPPLE_WEBHOOK_SECRET,
# RIPPLE_ADMIN_TOKEN, RIPPLE_VAULT_KEY, and the secrets of your enabled apps (with the example
# config: AUDIT_WEBHOOK_SECRET). See docker-compose.yml.
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force
COPY bin ./bin
COPY src ./src
COPY workers ./workers
COPY config ./config
USER node
ENV HOST=0.0.0.0 PORT=8080 RIPPLE_CONFIG=/app/config
EXPOSE 8080
# start runs API, planner and workers in one process; serve/worker split them (docker-compose.yml).
CMD ["node", "bin/ripple.js", "start"]
