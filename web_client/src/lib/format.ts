// Small pure helpers shared by the views (unit-tested in format.spec.ts).

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
