import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'

// Everything is bundled and served by the CloudWindow server itself (no CDN: government extranets are offline).
export default defineConfig({
  plugins: [vue()],
  base: '/',
  server: {
    host: '127.0.0.1',
    proxy: {
      '/api': 'http://127.0.0.1:8080',
      '/socket.io': { target: 'http://127.0.0.1:8080', ws: true },
    },
  },
  build: { outDir: 'dist', chunkSizeWarningLimit: 2500 },
})
