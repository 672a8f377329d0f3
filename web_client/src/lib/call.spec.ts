import { describe, expect, it } from 'vitest'
import { endKey, leftKey, FATAL_MEDIA_ERRORS, isWaiting, levelFromStats, mediaErrorCode, transportPolicy, levelToSend, moderatorOf, mutedOf, plan, quality, rms, withWaiter, withoutWaiter, type Participant } from './call'

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

const person = (id: string, extra: Partial<Participant> = {}): Participant => ({ participant_id: id, user_id: null, display_name: id, role: 'guest', tracks: [], ...extra })

describe('join acks', () => {
  it('tell the waiting room from a participant', () => {
    expect(isWaiting({ waiting: true, waiter_id: 'w1', participant_id: null, session: {} })).toBe(true)
    expect(
      isWaiting({ participant_id: 'p1', session: { recording: true }, participants: [], waiting: [], speaker: null, ice_servers: [], offer: { sdp: '', revision: 1, publish: {}, subscribe: {} } }),
    ).toBe(false)
  })

  it('give my own moderator flag and who is muted', () => {
    const people = [person('p1', { moderator: true }), person('p2', { muted: true }), person('p3')]
    expect(moderatorOf(people, 'p1')).toBe(true)
    expect(moderatorOf(people, 'p2')).toBe(false)
    expect(moderatorOf(people, 'nobody')).toBe(false)
    expect(mutedOf(people)).toEqual({ p1: false, p2: true, p3: false })
  })
})

describe('waiting list', () => {
  const a = { waiter_id: 'a', user_id: null, display_name: '吴磊', role: 'inspector' }
  const b = { waiter_id: 'b', user_id: 7, display_name: '王慧', role: 'expert' }
  it('adds each waiter once, in arrival order, and removes by id', () => {
    let list = withWaiter([], a)
    list = withWaiter(list, b)
    list = withWaiter(list, { ...a, display_name: '吴磊（现场）' })
    expect(list.map((w) => w.waiter_id)).toEqual(['a', 'b'])
    expect(list[0].display_name).toBe('吴磊（现场）')
    expect(withoutWaiter(list, 'a')).toEqual([b])
    expect(withoutWaiter(list, 'zzz')).toHaveLength(2)
  })
})

describe('audio level', () => {
  it('reads the audio media-source of a sender report', () => {
    expect(levelFromStats([{ type: 'outbound-rtp' }, { type: 'media-source', kind: 'video' }, { type: 'media-source', kind: 'audio', audioLevel: 0.25 }])).toBe(0.25)
    expect(levelFromStats([{ type: 'media-source', kind: 'audio' }])).toBeNull()
    expect(levelFromStats([])).toBeNull()
    expect(levelFromStats([{ type: 'media-source', kind: 'audio', audioLevel: 3 }])).toBe(1)
  })

  it('computes an RMS level from samples', () => {
    expect(rms([])).toBe(0)
    expect(rms([0, 0, 0])).toBe(0)
    expect(rms([0.5, -0.5, 0.5, -0.5])).toBeCloseTo(0.5)
    expect(rms([2, -2])).toBe(1)
  })

  it('sends the level while the mic is on, one 0 when it goes off, then nothing', () => {
    expect(levelToSend(true, 0.3, null)).toBe(0.3)
    expect(levelToSend(true, null, 0.3)).toBeNull()
    expect(levelToSend(false, null, 0.3)).toBe(0)
    expect(levelToSend(false, null, null)).toBe(0)
    expect(levelToSend(false, null, 0)).toBeNull()
    expect(levelToSend(true, 0.1, 0)).toBe(0.1)
  })
})

describe('media refusals', () => {
  it('knows the codes the call screen explains, and which stop the rejoins', () => {
    expect(mediaErrorCode('no_allowed_candidate')).toBe('no_allowed_candidate')
    expect(mediaErrorCode('codec_unsupported')).toBe('codec_unsupported')
    expect(mediaErrorCode('stale_answer')).toBe('')
    expect(mediaErrorCode(undefined)).toBe('')
    expect(FATAL_MEDIA_ERRORS).toEqual(['no_allowed_candidate'])
  })
  it('forces relay only when the local setting says so', () => {
    const store = (v: string | null) => ({ getItem: (k: string) => (k === 'cloudwindow.iceTransportPolicy' ? v : null) })
    expect(transportPolicy(store('relay'))).toBe('relay')
    expect(transportPolicy(store('all'))).toBe('all')
    expect(transportPolicy(store(null))).toBe('all')
    expect(transportPolicy(undefined)).toBe('all')
  })
})

describe('end of the call in words', () => {
  const keys = new Set(['callEnd.ended', 'callEnd.ended_by_host', 'callEnd.empty', 'callEnd.refused', 'callEnd.removed', 'callLeft.left', 'callLeft.disconnected'])
  const has = (k: string) => keys.has(k)

  it('prefers the server reason, then the client reason, then a plain end', () => {
    expect(endKey('ended', 'ended_by_host', has)).toBe('callEnd.ended_by_host')
    expect(endKey('ended', 'empty', has)).toBe('callEnd.empty')
    expect(endKey('ended', 'some_future_reason', has)).toBe('callEnd.ended')
    expect(endKey('refused', '', has)).toBe('callEnd.refused')
    expect(endKey('removed', '', has)).toBe('callEnd.removed')
    expect(endKey('', '', has)).toBe('callEnd.ended')
  })

  it('words who left, and says nothing for a rejoin', () => {
    expect(leftKey('disconnected', has)).toBe('callLeft.disconnected')
    expect(leftKey('unknown_reason', has)).toBe('callLeft.left')
    expect(leftKey(undefined, has)).toBe('callLeft.left')
    expect(leftKey('replaced', has)).toBeNull()
  })
})
