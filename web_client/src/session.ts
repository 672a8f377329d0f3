// The logged-in user, shared by every view.
import { reactive } from 'vue'
import { api, setTokens, type Me } from './lib/api'
import { closeRealtime } from './lib/realtime'

export const session = reactive<{ me: Me | null }>({ me: null })

export async function login(username: string, password: string): Promise<Me> {
  const tokens = await api<{ access_token: string; refresh_token: string }>('POST', '/auth/login', { username, password })
  setTokens(tokens.access_token, tokens.refresh_token)
  return loadMe()
}

export async function loadMe(): Promise<Me> {
  session.me = await api<Me>('GET', '/me')
  return session.me
}

export async function logout(): Promise<void> {
  try {
    await api('POST', '/auth/logout')
  } finally {
    setTokens(null, null)
    closeRealtime()
    session.me = null
  }
}

export function homeOf(role: string): string {
  if (role === 'clerk') return '/window'
  if (role === 'supervisor' || role === 'admin') return '/dashboard'
  return '/cases'
}
