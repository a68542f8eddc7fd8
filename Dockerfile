FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ansible-core ansible python3 g++ make curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/duffy
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build
EXPOSE 8080
CMD ["node", "dist/src/main.js"]
