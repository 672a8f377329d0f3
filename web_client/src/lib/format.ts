// Small pure helpers shared by the views (unit-tested in format.spec.ts).
import { i18n } from '../i18n'

export type TagType = 'success' | 'warning' | 'danger' | 'info'

/** Element Plus tag type of a queue colour (green / yellow / red). */
export function colourTag(colour: string | null | undefined): TagType {
  if (colour === 'red') return 'danger'
  if (colour === 'yellow') return 'warning'
  if (colour === 'green' || colour == null) return 'success'
  return 'info'
}

/** Whole minutes, rounded up, of a duration in seconds (an estimate of "0" minutes reads as 1 once anything waits). */
export function minutes(seconds: number | null | undefined): number {
  if (!seconds || seconds <= 0) return 0
  return Math.ceil(seconds / 60)
}

/** A human size: 1.2 MB, 340 KB. */
export function size(bytes: number): string {
  if (bytes >= 1024 * 1024) return `${(bytes / (1024 * 1024)).toFixed(1)} MB`
  return `${Math.max(1, Math.ceil(bytes / 1024))} KB`
}

/** i18n key of an audit action (``case.transition`` → ``audit.case_transition``). */
export function auditKey(action: string): string {
  return `audit.${action.replace(/[^a-z0-9]+/gi, '_')}`
}

// -- dates and times in the interface language (never the browser's locale) ------------------------------------

/** The Intl locale of an interface language: Chinese as in mainland China, English with day-month order and 24 h. */
export function intlLocale(language: string): string {
  return language === 'en' ? 'en-GB' : 'zh-CN'
}

const STYLES: Record<'dateTime' | 'date' | 'time' | 'timeSeconds', Intl.DateTimeFormatOptions> = {
  dateTime: { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' },
  date: { year: 'numeric', month: 'short', day: 'numeric' },
  time: { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' },
  timeSeconds: { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' },
}

export type DateStyle = keyof typeof STYLES

/**
 * A point in time (ISO string from the API, epoch ms or Date) in ``language`` (default: the interface's current one);
 * '' for a missing or unreadable value. ``timeZone`` defaults to the browser's (tests pin it).
 */
export function formatDate(value: string | number | Date | null | undefined, style: DateStyle = 'dateTime', language?: string, timeZone?: string): string {
  if (value === null || value === undefined || value === '') return ''
  const d = value instanceof Date ? value : new Date(value)
  if (Number.isNaN(d.getTime())) return ''
  const lang = language ?? String(i18n.global.locale.value)
  return new Intl.DateTimeFormat(intlLocale(lang), { ...STYLES[style], ...(timeZone ? { timeZone } : {}) }).format(d)
}
