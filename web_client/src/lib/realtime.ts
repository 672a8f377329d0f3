// Socket.IO: one connection per logged-in tab; every request is an event with an acknowledgement.
import { io, type Socket } from 'socket.io-client'
import { api, ApiError, token } from './api'

let socket: Socket | null = null

export function realtime(): Socket {
  if (socket === null) {
    const sock = io({ path: '/socket.io/', auth: (cb) => cb({ token: token() }), transports: ['websocket'] })
    // A socket refused for an expired access token does not try again by itself: refresh the login (any REST call
    // does, once), then reconnect with the new token.
    sock.on('connect_error', (err: Error & { data?: { code?: string } }) => {
      if (err.data?.code !== 'token_expired') return
      void api('GET', '/me')
        .then(() => {
          if (!sock.active) sock.connect()
        })
        .catch(() => undefined)
    })
    socket = sock
  }
  return socket
}

export function closeRealtime(): void {
  socket?.disconnect()
  socket = null
}

export interface Ack {
  ok: boolean
  error?: { code: string; message: string }
  [key: string]: unknown
}

/** Send ``event`` and wait for its ack; a refusal becomes an ApiError with the server's code. */
export async function ask<T extends Ack = Ack>(sock: Socket, event: string, payload: object, timeoutMs = 15000): Promise<T> {
  // No ack in time (socket.io rejects with a plain Error): the code 'timeout', so the user reads it in words.
  const ack = (await sock
    .timeout(timeoutMs)
    .emitWithAck(event, payload)
    .catch(() => {
      throw new ApiError(0, 'timeout', `${event}: no acknowledgement within ${timeoutMs} ms`)
    })) as T
  if (!ack.ok) throw new ApiError(0, ack.error?.code ?? 'error', ack.error?.message ?? 'refused')
  return ack
}
