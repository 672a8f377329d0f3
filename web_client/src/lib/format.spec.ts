import { describe, expect, it } from 'vitest'
import { auditKey, colourTag, formatDate, intlLocale, minutes, size } from './format'
import { i18n } from '../i18n'

describe('format', () => {
  it('maps queue colours to tag types', () => {
    expect(colourTag('green')).toBe('success')
    expect(colourTag('yellow')).toBe('warning')
    expect(colourTag('red')).toBe('danger')
    expect(colourTag(undefined)).toBe('success')
    expect(colourTag('purple')).toBe('info')
  })

  it('rounds waits up to whole minutes', () => {
    expect(minutes(0)).toBe(0)
    expect(minutes(null)).toBe(0)
    expect(minutes(1)).toBe(1)
    expect(minutes(60)).toBe(1)
    expect(minutes(61)).toBe(2)
    expect(minutes(-5)).toBe(0)
  })

  it('prints sizes', () => {
    expect(size(10)).toBe('1 KB')
    expect(size(2048)).toBe('2 KB')
    expect(size(3 * 1024 * 1024 + 100)).toBe('3.0 MB')
  })

  it('turns audit actions into catalogue keys', () => {
    expect(auditKey('case.transition')).toBe('audit.case_transition')
    expect(auditKey('recording.job_done')).toBe('audit.recording_job_done')
  })
})

describe('formatDate', () => {
  const at = '2026-12-08T01:05:09Z'

  it('writes dates in the interface language, not the browser locale', () => {
    expect(formatDate(at, 'dateTime', 'zh-CN', 'UTC')).toBe('2026年12月8日 01:05')
    expect(formatDate(at, 'dateTime', 'en', 'UTC')).toBe('8 Dec 2026, 01:05')
    expect(formatDate(at, 'date', 'zh-CN', 'UTC')).toBe('2026年12月8日')
    expect(formatDate(at, 'date', 'en', 'UTC')).toBe('8 Dec 2026')
    expect(formatDate(at, 'time', 'en', 'UTC')).toBe('01:05')
    expect(formatDate(at, 'timeSeconds', 'zh-CN', 'UTC')).toBe('01:05:09')
  })

  it('follows the time zone it is given', () => {
    expect(formatDate(at, 'time', 'zh-CN', 'Asia/Shanghai')).toBe('09:05')
  })

  it('follows the interface language when none is given', () => {
    i18n.global.locale.value = 'en'
    expect(formatDate(at, 'date', undefined, 'UTC')).toBe('8 Dec 2026')
    i18n.global.locale.value = 'zh-CN'
    expect(formatDate(at, 'date', undefined, 'UTC')).toBe('2026年12月8日')
  })

  it('accepts Date and epoch milliseconds, and gives nothing for nothing', () => {
    expect(formatDate(new Date(at), 'time', 'en', 'UTC')).toBe('01:05')
    expect(formatDate(Date.parse(at), 'time', 'en', 'UTC')).toBe('01:05')
    expect(formatDate(null)).toBe('')
    expect(formatDate('')).toBe('')
    expect(formatDate('not a date')).toBe('')
  })

  it('maps interface languages to Intl locales', () => {
    expect(intlLocale('en')).toBe('en-GB')
    expect(intlLocale('zh-CN')).toBe('zh-CN')
  })
})
