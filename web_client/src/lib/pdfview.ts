// PDF pages drawn onto canvases inside the page with pdf.js (no browser viewer, no download, no new window).
// The worker is bundled by Vite from the npm package and served by CloudWindow itself (no CDN). Loaded on first use.

/** At most this many pages are drawn (a preview, not a reader); the rest are counted. */
export const MAX_PAGES = 20

export interface Rendered {
  pages: number
  drawn: number
}

/** Render ``data`` (a PDF's bytes) into ``host``: one canvas per page, scaled to ``width`` CSS pixels. */
export async function renderPdf(data: ArrayBuffer, host: HTMLElement, width: number): Promise<Rendered> {
  const pdfjs = await import('pdfjs-dist')
  if (!pdfjs.GlobalWorkerOptions.workerSrc) {
    pdfjs.GlobalWorkerOptions.workerSrc = (await import('pdfjs-dist/build/pdf.worker.min.mjs?url')).default
  }
  // No script in the document is ever run (isEvalSupported false; pdf.js has no JavaScript engine here). The data
  // files come from our own server (vite.config.ts copies them; in development Vite serves node_modules).
  const base = import.meta.env.DEV ? '/node_modules/pdfjs-dist' : '/assets/pdfjs'
  const doc = await pdfjs.getDocument({
    data: new Uint8Array(data),
    isEvalSupported: false,
    cMapUrl: `${base}/cmaps/`,
    cMapPacked: true,
    standardFontDataUrl: `${base}/standard_fonts/`,
    wasmUrl: `${base}/wasm/`,
  }).promise
  try {
    host.replaceChildren()
    const drawn = Math.min(doc.numPages, MAX_PAGES)
    const ratio = window.devicePixelRatio || 1
    for (let n = 1; n <= drawn; n++) {
      const page = await doc.getPage(n)
      const base = page.getViewport({ scale: 1 })
      const viewport = page.getViewport({ scale: (width / base.width) * ratio })
      const canvas = document.createElement('canvas')
      canvas.width = Math.floor(viewport.width)
      canvas.height = Math.floor(viewport.height)
      canvas.style.width = `${Math.floor(viewport.width / ratio)}px`
      canvas.dataset.page = String(n)
      host.appendChild(canvas)
      await page.render({ canvas, canvasContext: canvas.getContext('2d')!, viewport }).promise
    }
    return { pages: doc.numPages, drawn }
  } finally {
    await doc.destroy()
  }
}
