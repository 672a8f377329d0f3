// Texts of the invite landing page and the on-site phone page (merged into en.ts).
import type zh from './field.zh-CN'

const en: typeof zh = {
  join: { title: 'Join the session' },
  inspect: { title: 'Remote site inspection' },
}
export default en
