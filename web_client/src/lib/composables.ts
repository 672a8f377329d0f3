// Two small patterns every screen shares: listening to Socket.IO events while mounted, and running a user action
// with a busy flag, its refusal shown in words and the screen re-read afterwards.
import { onMounted, onUnmounted, ref, type Ref } from 'vue'
import { ElMessage } from 'element-plus'
import { i18n } from '../i18n'
import { realtime } from './realtime'
import { errorText } from './errors'

type Handler = (...args: any[]) => void

/** Listen to these server events on the tab's socket from mount to unmount. */
export function useSocketEvents(handlers: Record<string, Handler>): void {
  const sock = realtime()
  onMounted(() => {
    for (const [event, fn] of Object.entries(handlers)) sock.on(event, fn)
  })
  onUnmounted(() => {
    for (const [event, fn] of Object.entries(handlers)) sock.off(event, fn)
  })
}

/** ``run(fn, done?)``: busy while ``fn`` runs, a refusal as an error message, then ``after()`` (re-read the screen). */
export function useAction(after: () => Promise<unknown>): {
  busy: Ref<boolean>
  run: <T>(fn: () => Promise<T>, done?: string) => Promise<T | undefined>
} {
  const busy = ref(false)
  async function run<T>(fn: () => Promise<T>, done?: string): Promise<T | undefined> {
    busy.value = true
    try {
      const out = await fn()
      if (done) ElMessage.success(done)
      return out
    } catch (e) {
      ElMessage.error(i18n.global.t('common.error', { msg: errorText(e) }))
      return undefined
    } finally {
      busy.value = false
      await after()
    }
  }
  return { busy, run }
}
