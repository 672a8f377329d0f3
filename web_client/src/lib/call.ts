// One participant's side of a case session: Socket.IO signalling (docs/protocol.md) and one RTCPeerConnection.
// The server always offers; this client only answers.  A failed connection or a dropped socket rejoins the
// session with a new peer connection (aiortc has no ICE restart); the server replaces the old participant.
import { reactive } from 'vue'
import type { Socket } from 'socket.io-client'
import { ask, type Ack } from './realtime'

export type Label = 'audio' | 'camera' | 'screen'

export interface WireTrack {
  stream_id: string
  kind: 'audio' | 'video'
  label: Label
  mid: string
  participant_id?: string
}

export interface Participant {
  participant_id: string
  user_id: number | null
  display_name: string
  role: string
  tracks: WireTrack[]
}

export interface Offer {
  sdp: string
  revision: number
  publish: Record<string, Label>
  subscribe: Record<string, WireTrack & { participant_id: string }>
}

export interface Tile {
  key: string
  participantId: string
  displayName: string
  label: 'camera' | 'screen'
  stream: MediaStream
}

export interface ChatLine {
  id: number
  participant_id: string
  display_name: string
  text: string
  at: string
}

export type Quality = 'good' | 'fair' | 'poor' | 'unknown'

/** Which transceivers carry what: pure function of the server's offer (unit-tested). */
export function plan(offer: Pick<Offer, 'publish' | 'subscribe'>): {
  publish: Map<string, Label>
  video: Map<string, { participantId: string; label: 'camera' | 'screen' }>
  audio: Map<string, string>
} {
  const publish = new Map(Object.entries(offer.publish))
  const video = new Map<string, { participantId: string; label: 'camera' | 'screen' }>()
  const audio = new Map<string, string>()
  for (const [mid, t] of Object.entries(offer.subscribe)) {
    if (t.kind === 'video' && (t.label === 'camera' || t.label === 'screen')) video.set(mid, { participantId: t.participant_id, label: t.label })
    else if (t.kind === 'audio') audio.set(mid, t.participant_id)
  }
  return { publish, video, audio }
}

/** good / fair / poor from round-trip time (s) and the fraction of packets lost. */
export function quality(rtt: number | null, lossFraction: number | null): Quality {
  if (rtt === null && lossFraction === null) return 'unknown'
  const r = rtt ?? 0
  const l = lossFraction ?? 0
  if (r > 0.4 || l > 0.08) return 'poor'
  if (r > 0.15 || l > 0.02) return 'fair'
  return 'good'
}

function waitIce(pc: RTCPeerConnection, ms: number): Promise<void> {
  if (pc.iceGatheringState === 'complete') return Promise.resolve()
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === 'complete') {
        pc.removeEventListener('icegatheringstatechange', done)
        resolve()
      }
    }
    pc.addEventListener('icegatheringstatechange', done)
    setTimeout(resolve, ms)
  })
}

export class CallClient {
  state = reactive({
    joined: false,
    participantId: '',
    recording: false,
    reconnecting: false,
    ended: false,
    quality: 'unknown' as Quality,
    participants: [] as Participant[],
    tiles: [] as Tile[],
    chat: [] as ChatLine[],
    sharing: false,
    micOn: true,
    cameraOn: true,
    error: '',
  })

  pc: RTCPeerConnection | null = null
  private streams = new Map<string, MediaStream>()
  private chain: Promise<void> = Promise.resolve()
  private screen: MediaStreamTrack | null = null
  private screenMid: string | null = null
  private iceServers: RTCIceServer[] = []
  private statsTimer: ReturnType<typeof setInterval> | null = null
  private rejoining = false
  private handlers: [string, (...args: never[]) => void][] = []

  constructor(
    private sock: Socket,
    public sessionId: number,
    private local: MediaStream,
  ) {
    this.on('media.offer', (offer: Offer) => this.enqueue(offer))
    this.on('participant.joined', (d: { participant: Participant }) => {
      this.state.participants = [...this.state.participants.filter((p) => p.participant_id !== d.participant.participant_id), d.participant]
    })
    this.on('participant.left', (d: { participant_id: string }) => {
      this.state.participants = this.state.participants.filter((p) => p.participant_id !== d.participant_id)
      this.state.tiles = this.state.tiles.filter((t) => t.participantId !== d.participant_id)
    })
    this.on('chat.message', (m: ChatLine) => this.state.chat.push(m))
    this.on('recording.state', (d: { recording: boolean }) => (this.state.recording = d.recording))
    this.on('session.ended', () => {
      this.state.ended = true
      this.closePc()
    })
    this.on('media.state', (d: { state: string }) => {
      if (d.state === 'failed') void this.rejoin()
    })
    this.on('connect', () => {
      if (this.state.joined || this.state.reconnecting) void this.rejoin()
    })
    this.on('disconnect', () => {
      if (!this.state.ended) this.state.reconnecting = true
    })
    // The browser knows at once when its network goes away and comes back; the socket's heartbeat would take
    // tens of seconds.  Going offline drops the socket; coming back reconnects it, and 'connect' rejoins.
    window.addEventListener('offline', this.offline)
    window.addEventListener('online', this.online)
  }

  private offline = (): void => {
    if (this.state.ended) return
    this.state.reconnecting = true
    this.sock.disconnect()
    this.closePc() // what a real drop does to the media; the rejoin builds a new connection
  }

  private online = (): void => {
    if (!this.state.ended && !this.sock.connected) this.sock.connect()
  }

  private on(event: string, fn: (...args: never[]) => void): void {
    this.sock.on(event, fn as (...args: unknown[]) => void)
    this.handlers.push([event, fn])
  }

  get displayNames(): Map<string, string> {
    return new Map(this.state.participants.map((p) => [p.participant_id, p.display_name]))
  }

  async join(): Promise<void> {
    this.closePc()
    const ack = await ask<Ack & { participant_id: string; session: { recording: boolean }; participants: Participant[]; ice_servers: RTCIceServer[]; offer: Offer }>(
      this.sock,
      'session.join',
      { session_id: this.sessionId },
    )
    this.state.participantId = ack.participant_id
    this.state.participants = ack.participants
    this.state.recording = Boolean(ack.session.recording)
    this.iceServers = ack.ice_servers
    this.pc = this.newPc()
    this.chain = Promise.resolve()
    this.state.joined = true
    await this.enqueue(ack.offer)
    if (this.screen) {
      // Still sharing after a rejoin: publish the screen again on the new connection.
      const pub = await ask<Ack & { mid: string }>(this.sock, 'media.publish', { label: 'screen' })
      this.screenMid = pub.mid
    }
    this.startStats()
  }

  private newPc(): RTCPeerConnection {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: 'max-bundle' })
    pc.addEventListener('connectionstatechange', () => {
      if (pc !== this.pc) return
      if (pc.connectionState === 'connected') this.state.reconnecting = false
      if (pc.connectionState === 'failed') void this.rejoin()
    })
    return pc
  }

  private enqueue(offer: Offer): Promise<void> {
    this.chain = this.chain.then(() => this.answer(offer)).catch((e: Error) => {
      if ((e as { code?: string }).code !== 'stale_answer') this.state.error = e.message
    })
    return this.chain
  }

  private async answer(offer: Offer): Promise<void> {
    const pc = this.pc
    if (!pc || pc.signalingState === 'closed') return
    await pc.setRemoteDescription({ type: 'offer', sdp: offer.sdp })
    const p = plan(offer)
    const mine: Record<Label, MediaStreamTrack | null> = {
      audio: this.local.getAudioTracks()[0] ?? null,
      camera: this.local.getVideoTracks()[0] ?? null,
      screen: this.screen,
    }
    for (const t of pc.getTransceivers()) {
      const label = t.mid ? p.publish.get(t.mid) : undefined
      if (!label) continue
      const track = mine[label]
      if (track && t.sender.track !== track) await t.sender.replaceTrack(track)
      t.direction = track ? 'sendonly' : 'inactive'
    }
    const answer = await pc.createAnswer()
    await pc.setLocalDescription(answer)
    await waitIce(pc, 3000)
    this.updateTiles(pc, p)
    await ask(this.sock, 'media.answer', { sdp: pc.localDescription?.sdp ?? '', revision: offer.revision })
  }

  private updateTiles(pc: RTCPeerConnection, p: ReturnType<typeof plan>): void {
    const byMid = new Map(pc.getTransceivers().map((t) => [t.mid ?? '', t]))
    const audioOf = new Map<string, MediaStreamTrack>()
    for (const [mid, pid] of p.audio) {
      const t = byMid.get(mid)
      if (t) audioOf.set(pid, t.receiver.track)
    }
    const names = this.displayNames
    const tiles: Tile[] = []
    for (const [mid, v] of p.video) {
      const t = byMid.get(mid)
      if (!t) continue
      const key = `${v.participantId}:${v.label}`
      let stream = this.streams.get(key)
      if (!stream) {
        stream = new MediaStream()
        this.streams.set(key, stream)
      }
      const wanted = [t.receiver.track, ...(v.label === 'camera' && audioOf.get(v.participantId) ? [audioOf.get(v.participantId)!] : [])]
      for (const old of stream.getTracks()) if (!wanted.includes(old)) stream.removeTrack(old)
      for (const track of wanted) if (!stream.getTracks().includes(track)) stream.addTrack(track)
      tiles.push({ key, participantId: v.participantId, displayName: names.get(v.participantId) ?? '', label: v.label, stream })
    }
    this.state.tiles = tiles
  }

  async rejoin(): Promise<void> {
    if (this.rejoining || this.state.ended) return
    this.rejoining = true
    this.state.reconnecting = true
    try {
      for (let attempt = 0; attempt < 30 && !this.state.ended; attempt++) {
        if (this.sock.connected) {
          try {
            await this.join()
            return
          } catch (e) {
            this.state.error = (e as Error).message
          }
        }
        await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** attempt, 5000)))
      }
    } finally {
      this.rejoining = false
    }
  }

  async shareScreen(): Promise<void> {
    const display = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false })
    this.screen = display.getVideoTracks()[0]
    this.screen.addEventListener('ended', () => void this.stopScreen())
    const ack = await ask<Ack & { mid: string }>(this.sock, 'media.publish', { label: 'screen' })
    this.screenMid = ack.mid
    this.state.sharing = true
  }

  async stopScreen(): Promise<void> {
    const mid = this.screenMid
    this.screen?.stop()
    this.screen = null
    this.screenMid = null
    this.state.sharing = false
    if (mid && this.state.joined && !this.state.ended) await ask(this.sock, 'media.unpublish', { mid })
  }

  setMic(on: boolean): void {
    for (const t of this.local.getAudioTracks()) t.enabled = on
    this.state.micOn = on
  }

  setCamera(on: boolean): void {
    for (const t of this.local.getVideoTracks()) t.enabled = on
    this.state.cameraOn = on
  }

  async switchDevice(kind: 'audio' | 'video', deviceId: string): Promise<void> {
    const fresh = await navigator.mediaDevices.getUserMedia(kind === 'audio' ? { audio: { deviceId } } : { video: { deviceId } })
    const track = kind === 'audio' ? fresh.getAudioTracks()[0] : fresh.getVideoTracks()[0]
    const old = kind === 'audio' ? this.local.getAudioTracks()[0] : this.local.getVideoTracks()[0]
    if (old) {
      this.local.removeTrack(old)
      old.stop()
    }
    this.local.addTrack(track)
    for (const t of this.pc?.getTransceivers() ?? []) if (t.sender.track === old) await t.sender.replaceTrack(track)
  }

  async sendChat(text: string): Promise<void> {
    await ask(this.sock, 'chat.send', { text })
  }

  private startStats(): void {
    if (this.statsTimer) clearInterval(this.statsTimer)
    this.statsTimer = setInterval(async () => {
      const pc = this.pc
      if (!pc) return
      let rtt: number | null = null
      let lost = 0
      let received = 0
      const report = await pc.getStats()
      report.forEach((s) => {
        if (s.type === 'candidate-pair' && s.nominated && typeof s.currentRoundTripTime === 'number') rtt = s.currentRoundTripTime
        if (s.type === 'inbound-rtp') {
          lost += s.packetsLost ?? 0
          received += s.packetsReceived ?? 0
        }
      })
      this.state.quality = quality(rtt, received + lost > 0 ? lost / (received + lost) : null)
    }, 2000)
  }

  private closePc(): void {
    if (this.pc) {
      this.pc.close()
      this.pc = null
    }
  }

  async leave(): Promise<void> {
    if (this.statsTimer) clearInterval(this.statsTimer)
    for (const [event, fn] of this.handlers) this.sock.off(event, fn as (...args: unknown[]) => void)
    window.removeEventListener('offline', this.offline)
    window.removeEventListener('online', this.online)
    this.screen?.stop()
    if (this.state.joined && this.sock.connected && !this.state.ended) {
      try {
        await ask(this.sock, 'session.leave', {})
      } catch {
        /* leaving anyway */
      }
    }
    this.closePc()
    for (const t of this.local.getTracks()) t.stop()
    this.state.joined = false
  }
}
