import { describe, expect, it } from 'vitest'
import { auditKey, colourTag, minutes, size } from './format'

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
