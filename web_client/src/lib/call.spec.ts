import { describe, expect, it } from 'vitest'
import { plan, quality } from './call'

describe('plan', () => {
  it('splits the server offer into what to send and whose tracks arrive where', () => {
    const p = plan({
      publish: { '0': 'audio', '1': 'camera', '5': 'screen' },
      subscribe: {
        '2': { stream_id: 's1', kind: 'audio', label: 'audio', mid: '2', participant_id: 'p1' },
        '3': { stream_id: 's1', kind: 'video', label: 'camera', mid: '3', participant_id: 'p1' },
        '4': { stream_id: 's2', kind: 'video', label: 'screen', mid: '4', participant_id: 'p1' },
        '6': { stream_id: 's3', kind: 'video', label: 'camera', mid: '6', participant_id: 'p2' },
      },
    })
    expect([...p.publish]).toEqual([
      ['0', 'audio'],
      ['1', 'camera'],
      ['5', 'screen'],
    ])
    expect(p.audio.get('2')).toBe('p1')
    expect(p.video.get('3')).toEqual({ participantId: 'p1', label: 'camera' })
    expect(p.video.get('4')).toEqual({ participantId: 'p1', label: 'screen' })
    expect(p.video.get('6')).toEqual({ participantId: 'p2', label: 'camera' })
    expect(p.video.has('2')).toBe(false)
  })

  it('ignores a video track labelled audio (malformed offer)', () => {
    const p = plan({ publish: {}, subscribe: { '1': { stream_id: 'x', kind: 'video', label: 'audio', mid: '1', participant_id: 'p' } } })
    expect(p.video.size).toBe(0)
    expect(p.audio.size).toBe(0)
  })
})

describe('quality', () => {
  it('is unknown without figures', () => expect(quality(null, null)).toBe('unknown'))
  it('is good on a fast clean link', () => expect(quality(0.02, 0)).toBe('good'))
  it('is fair with some delay or loss', () => {
    expect(quality(0.2, 0)).toBe('fair')
    expect(quality(0.05, 0.03)).toBe('fair')
  })
  it('is poor with long delay or heavy loss', () => {
    expect(quality(0.5, 0)).toBe('poor')
    expect(quality(0.01, 0.1)).toBe('poor')
  })
  it('uses whichever figure it has', () => {
    expect(quality(null, 0.09)).toBe('poor')
    expect(quality(0.3, null)).toBe('fair')
  })
})
