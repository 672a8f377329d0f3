// Materials in the call (材料预审): the live checklist status, computed the way the server computes it
// (docs/api.md, "Material review"), so a pushed document.added / document.reviewed / document.removed updates the
// screen at once without another request.

export type ReviewState = 'pending' | 'accepted' | 'returned'
export type ItemStatus = 'missing' | ReviewState

export interface MaterialDocument {
  id: number
  case_id: number
  checklist_item_id: number | null
  item: string | null
  filename: string
  content_type: string
  size: number
  sha256: string
  created_at: string
  review_state: ReviewState
  review_reason: string | null
  reviewed_by: number | null
  reviewed_at: string | null
}

export interface MaterialItem {
  code: string
  name_zh: string
  name_en: string
  required: boolean
  accepted_types: string[]
  max_size: number
  documents: number
  satisfied: boolean
  status: ItemStatus
  document_id: number | null
  review_reason: string | null
}

export interface Materials {
  case_id: number
  number: string
  state: string
  matter_code: string
  matter_name_zh: string
  matter_name_en: string
  applicant_name: string
  applicant_id_masked: string
  is_proxy: boolean
  proxy_name: string | null
  ticket: { id: number; number: string; state: string } | null
  checklist: MaterialItem[]
  checklist_complete: boolean
  documents: MaterialDocument[]
}

/** A pushed notice (docs/protocol.md, "Material notices"). */
export interface DocumentNotice {
  case_id: number
  item: string | null
  item_status: ItemStatus | null
  document?: MaterialDocument
  document_id?: number
}

/** Case states in which the point may add or replace materials (the call included); the others are final. */
export const UPLOAD_STATES = ['draft', 'submitted', 'in_session']

/** The newest document decides: a re-upload after a return supersedes the returned one. */
export function itemStatus(docs: readonly Pick<MaterialDocument, 'id' | 'review_state'>[]): ItemStatus {
  if (!docs.length) return 'missing'
  return docs.reduce((a, b) => (b.id > a.id ? b : a)).review_state
}

export const isSatisfied = (s: ItemStatus): boolean => s === 'pending' || s === 'accepted'

/** Element Plus tag type for an item's status. */
export function statusTag(s: ItemStatus): 'success' | 'warning' | 'danger' | 'info' | 'primary' {
  return s === 'accepted' ? 'success' : s === 'returned' ? 'danger' : s === 'pending' ? 'primary' : 'warning'
}

/** The documents of one checklist item, newest first. */
export function documentsOf(m: Materials, code: string): MaterialDocument[] {
  return m.documents.filter((d) => d.item === code).sort((a, b) => b.id - a.id)
}

/** Recompute every item's status, satisfaction, newest document and reason from the document list. */
export function recompute(m: Materials): Materials {
  const checklist = m.checklist.map((item) => {
    const docs = documentsOf(m, item.code)
    const status = itemStatus(docs)
    return {
      ...item,
      documents: docs.length,
      status,
      satisfied: isSatisfied(status),
      document_id: docs[0]?.id ?? null,
      review_reason: docs[0]?.review_reason ?? null,
    }
  })
  return { ...m, checklist, checklist_complete: checklist.every((i) => i.satisfied || !i.required) }
}

/** Apply a pushed notice for this case (others are ignored); returns the new state. */
export function applyNotice(m: Materials, event: string, n: DocumentNotice): Materials {
  if (n.case_id !== m.case_id) return m
  let documents = m.documents
  if ((event === 'document.added' || event === 'document.reviewed') && n.document) {
    const doc = n.document
    documents = [...documents.filter((d) => d.id !== doc.id), doc]
  } else if (event === 'document.removed' && n.document_id !== undefined) {
    documents = documents.filter((d) => d.id !== n.document_id)
  } else {
    return m
  }
  return recompute({ ...m, documents: documents.sort((a, b) => a.id - b.id) })
}

const MIME: Record<string, string> = { pdf: 'application/pdf', jpeg: 'image/jpeg', jpg: 'image/jpeg', png: 'image/png', webp: 'image/webp' }

/** The checks the server makes too, done first so the user reads the reason at once: 'tooLarge', 'badType' or null. */
export function precheck(item: Pick<MaterialItem, 'accepted_types' | 'max_size'>, file: { size: number; type: string }): 'tooLarge' | 'badType' | null {
  if (file.size > item.max_size) return 'tooLarge'
  const accepted = item.accepted_types.map((x) => MIME[x] ?? x)
  if (accepted.length && file.type && !accepted.includes(file.type)) return 'badType'
  return null
}

/**
 * Video constraints for a 高拍仪 snapshot: the chosen camera at the largest native mode it has. Chromium picks the
 * native mode nearest the ideal size; resizeMode 'none' forbids it to crop or scale down (the old snapshot asked for
 * 1280×720 and so got at most that).
 */
export function fullResolution(deviceId: string): MediaTrackConstraints {
  return {
    ...(deviceId ? { deviceId: { exact: deviceId } } : {}),
    width: { ideal: 4096 },
    height: { ideal: 3072 },
    resizeMode: 'none',
  } as MediaTrackConstraints
}
