import { cpSync } from 'node:fs'
import { defineConfig, type Plugin } from 'vite'
import vue from '@vitejs/plugin-vue'

/**
 * pdf.js's data files, self-hosted beside the bundle under /assets/pdfjs/: the Adobe CMaps (Chinese text in PDFs whose
 * fonts are not embedded), the standard fonts, and the wasm image decoders (JPEG 2000, JBIG2: scanned papers).
 */
function pdfjsAssets(): Plugin {
  return {
    name: 'cloudwindow-pdfjs-assets',
    apply: 'build',
    closeBundle() {
      for (const dir of ['cmaps', 'standard_fonts', 'wasm']) {
        cpSync(`node_modules/pdfjs-dist/${dir}`, `dist/assets/pdfjs/${dir}`, { recursive: true })
      }
    },
  }
}

// Everything is bundled and served by the CloudWindow server itself (no CDN: government extranets are offline).
export default defineConfig({
  plugins: [vue(), pdfjsAssets()],
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
