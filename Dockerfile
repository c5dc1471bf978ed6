# One image for the API and the workers; the command picks the role.
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
CMD ["node", "bin/ripple.js", "start"]
