// A server refusal in the interface language. The server sends {code, message, details}; its message is English, for
// developers and logs, and is never shown: the text comes from the catalogue's `errors.codes.<code>`, or, for a code
// this client does not know yet, a generic sentence in the user's language that names the code.
// tests/server/test_error_codes_translated.py keeps the catalogue complete for every code the server can send.
import { i18n } from '../i18n'
import { ApiError } from './api'

/** What a refusal looks like here: an ApiError, a Socket.IO ack's `error`, or a `connect_error` with `data`. */
interface Coded {
  code: string
  status?: number
  details?: Record<string, unknown>
}

/** Camera and microphone failures (DOMException names) have words too, so no browser English reaches the screen. */
const BROWSER = new Set(['NotAllowedError', 'NotFoundError', 'NotReadableError', 'OverconstrainedError', 'AbortError', 'SecurityError'])

function coded(e: unknown): Coded | null {
  if (e instanceof ApiError) return e
  if (e && typeof e === 'object') {
    const o = e as { code?: unknown; data?: { code?: unknown }; error?: { code?: unknown } }
    if (typeof o.code === 'string' && /^[a-z][a-z0-9_]*$/.test(o.code)) return o as Coded
    if (o.error && typeof o.error.code === 'string') return o.error as Coded
    if (o.data && typeof o.data.code === 'string') return o.data as Coded
  }
  return null
}

/** The machine code behind ``e`` ('network_error' for a failed fetch, '' when there is none). */
export function errorCode(e: unknown): string {
  const c = coded(e)
  if (c) return c.code
  if (e instanceof TypeError) return 'network_error' // fetch() rejects with a TypeError when the network is down
  return ''
}

/** The text to show for a refusal, in the interface language. */
export function errorText(e: unknown): string {
  const { t, te } = i18n.global
  const c = coded(e)
  if (c) {
    const key = `errors.codes.${c.code}`
    if (te(key)) return t(key)
    return c.status ? t('errors.withStatus', { code: c.code, status: c.status }) : t('errors.generic', { code: c.code })
  }
  if (e instanceof TypeError) return t('errors.codes.network_error')
  const name = e instanceof Error ? e.name : ''
  if (BROWSER.has(name)) return t(`errors.browser.${name}`)
  return t('errors.generic', { code: name || 'error' })
}

export interface FieldProblem {
  field: string
  type: string
}

/**
 * The field-level problems of a ``validation_error`` (``details.errors[]`` of ``{loc, message, type}``, one per
 * pydantic error): the field is the last name in ``loc``; problems without a field (a whole-form rule) are left out.
 */
export function fieldProblems(e: unknown): FieldProblem[] {
  const c = coded(e)
  const list = c?.details?.errors
  if (!Array.isArray(list)) return []
  const out: FieldProblem[] = []
  for (const item of list as { loc?: unknown; type?: unknown }[]) {
    const loc = Array.isArray(item.loc) ? item.loc.filter((p): p is string => typeof p === 'string' && !/^\d+$/.test(p) && p !== 'body') : []
    if (loc.length) out.push({ field: loc[loc.length - 1], type: typeof item.type === 'string' ? item.type : '' })
  }
  return out
}

/**
 * Field name -> the message to put on that form field, in the interface language: the field's own sentence
 * (`errors.fields.<field>`) when the catalogue has one, else the kind of problem (`errors.field.<type>`).
 */
export function fieldErrors(e: unknown): Record<string, string> {
  const { t, te } = i18n.global
  const out: Record<string, string> = {}
  for (const p of fieldProblems(e)) {
    if (out[p.field]) continue
    const own = `errors.fields.${p.field}`
    const kind = `errors.field.${p.type}`
    out[p.field] = p.type !== 'string_too_long' && te(own) ? t(own) : te(kind) ? t(kind) : t('errors.field.generic')
  }
  return out
}
