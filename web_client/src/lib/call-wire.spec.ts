import { describe, expect, it } from 'vitest'
import { isForMe, mergeChat, screenTrack, type ChatLine } from './call'

describe('screenTrack', () => {
  it('marks the screen capture as detailed content so it does not start at 320x180', () => {
    const track = { kind: 'video', contentHint: '' }
    const display = { getVideoTracks: () => [track] } as unknown as MediaStream
    expect(screenTrack(display)).toBe(track)
    expect(track.contentHint).toBe('detail')
  })
})

describe('isForMe', () => {
  it('takes an offer for my current join, and one from a server that names no participant', () => {
    expect(isForMe({ participant_id: 'p2' }, 'p2')).toBe(true)
    expect(isForMe({}, 'p2')).toBe(true)
  })
  it('ignores an offer or media state meant for the participant a rejoin replaced', () => {
    expect(isForMe({ participant_id: 'p1' }, 'p2')).toBe(false)
    expect(isForMe({ participant_id: 'p1' }, '')).toBe(false)
  })
})

describe('mergeChat', () => {
  const line = (id: number, text: string, extra: Partial<ChatLine> = {}): ChatLine => ({ id, display_name: '张丽', text, at: '2026-12-08T01:00:00+00:00', ...extra })
  it('restores the transcript around lines already pushed, each once, in stored order', () => {
    const live = [line(5, 'e', { participant_id: 'p1' }), line(3, 'c', { participant_id: 'p1' })]
    const restored = [line(1, 'a', { user_id: 7 }), line(3, 'c', { user_id: 7 }), line(4, 'd', { user_id: 8 })]
    const merged = mergeChat(live, restored)
    expect(merged.map((m) => m.id)).toEqual([1, 3, 4, 5])
    expect(merged.find((m) => m.id === 3)).toMatchObject({ participant_id: 'p1', user_id: 7, text: 'c' })
  })
  it('keeps a pushed line that arrives twice (push and transcript) once', () => {
    expect(mergeChat([line(2, 'b')], [line(2, 'b')])).toHaveLength(1)
    expect(mergeChat([], [])).toEqual([])
  })
})
