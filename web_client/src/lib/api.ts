// REST client: bearer token (kept per browser tab), one refresh on expiry, errors carry the server's stable code.

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public details: Record<string, unknown> = {},
  ) {
    super(message)
  }
}

const TOKEN = 'cw.token'
const REFRESH = 'cw.refresh'

export function setTokens(access: string | null, refresh: string | null): void {
  if (access) sessionStorage.setItem(TOKEN, access)
  else sessionStorage.removeItem(TOKEN)
  if (refresh) sessionStorage.setItem(REFRESH, refresh)
  else sessionStorage.removeItem(REFRESH)
}

export function token(): string | null {
  return sessionStorage.getItem(TOKEN)
}

async function errorOf(resp: Response): Promise<ApiError> {
  try {
    const body = await resp.json()
    return new ApiError(resp.status, String(body.code ?? 'error'), String(body.message ?? resp.statusText), body.details ?? {})
  } catch {
    return new ApiError(resp.status, 'http_error', resp.statusText)
  }
}

/** One refresh at a time: the server ends the whole login session when a rotated refresh token comes back, so two
 * requests refused together with token_expired must share one refresh, not each present the same token. */
let refreshing: Promise<boolean> | null = null

function refresh(): Promise<boolean> {
  refreshing ??= rotate().finally(() => {
    refreshing = null
  })
  return refreshing
}

async function rotate(): Promise<boolean> {
  const refreshToken = sessionStorage.getItem(REFRESH)
  if (!refreshToken) return false
  const resp = await fetch('/api/v1/auth/refresh', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ refresh_token: refreshToken }),
  })
  if (!resp.ok) return false
  const body = await resp.json()
  setTokens(body.access_token, body.refresh_token)
  return true
}

export async function api<T = unknown>(method: string, path: string, body?: unknown, retry = true): Promise<T> {
  const headers: Record<string, string> = {}
  const t = token()
  if (t) headers.Authorization = `Bearer ${t}`
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  const resp = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  if (resp.status === 401 && retry) {
    const err = await errorOf(resp.clone())
    if (err.code === 'token_expired' && (await refresh())) return api<T>(method, path, body, false)
    throw err
  }
  if (!resp.ok) throw await errorOf(resp)
  if (resp.status === 204) return undefined as T
  return (await resp.json()) as T
}

/** A protected binary (an evidence photo, a report) as a Blob, with the bearer token. */
export async function apiBlob(path: string): Promise<Blob> {
  const t = token()
  const resp = await fetch(`/api/v1${path}`, { headers: t ? { Authorization: `Bearer ${t}` } : {} })
  if (!resp.ok) throw await errorOf(resp)
  return resp.blob()
}

/** Upload one file as multipart part ``file``, reporting progress (0–100). */
export function upload<T = unknown>(path: string, file: Blob, name: string, onProgress: (p: number) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest()
    xhr.open('POST', `/api/v1${path}`)
    const t = token()
    if (t) xhr.setRequestHeader('Authorization', `Bearer ${t}`)
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(Math.round((100 * e.loaded) / e.total))
    }
    xhr.onload = () => {
      let body: Record<string, unknown> = {}
      try {
        body = JSON.parse(xhr.responseText)
      } catch {
        /* not JSON */
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body as T)
      else reject(new ApiError(xhr.status, String(body.code ?? 'http_error'), String(body.message ?? xhr.statusText), (body.details as Record<string, unknown>) ?? {}))
    }
    xhr.onerror = () => reject(new ApiError(0, 'network_error', 'network error'))
    const form = new FormData()
    form.append('file', file, name)
    xhr.send(form)
  })
}

export interface Page<T> {
  items: T[]
  total: number
  limit: number
  offset: number
}

export interface Me {
  user_id: number | null
  username: string
  display_name: string
  role: string
  unit_id: number | null
  unit_name_zh: string | null
  unit_name_en: string | null
  department_id: number | null
}

export interface ChecklistEntry {
  code: string
  name_zh: string
  name_en: string
  required: boolean
  accepted_types: string[]
  max_size: number
  documents: number
  satisfied: boolean
  /** 材料预审: missing / pending / accepted / returned (newest document decides). */
  status?: string
  review_reason?: string | null
}

export interface Case {
  id: number
  number: string
  matter_code: string
  matter_name_zh: string
  matter_name_en: string
  state: string
  applicant_name: string
  applicant_id_masked: string
  is_proxy: boolean
  department_id: number
  unit_id: number
  created_at: string
  checklist?: ChecklistEntry[]
  checklist_complete?: boolean
  allowed_transitions?: string[]
}

export interface Document {
  id: number
  filename: string
  content_type: string
  size: number
  sha256: string
  checklist_item_code?: string | null
}

export interface Ticket {
  id: number
  number: string
  case_id: number
  state: string
  department_id: number
  window_id: number | null
  clerk_user_id?: number | null
  position?: number | null
  estimated_wait?: number | null
  session_id?: number
}

export interface Recording {
  id: number
  session_id: number
  kind: string
  participant_display_name: string | null
  duration_s: number
  size: number
  sha256: string
  created_at: string
}
