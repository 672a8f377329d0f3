import { describe, expect, it } from 'vitest'
import { applyNotice, fullResolution, isSatisfied, itemStatus, precheck, recompute, statusTag, type MaterialDocument, type Materials } from './materials'

function doc(id: number, item: string | null, review_state: MaterialDocument['review_state'], review_reason: string | null = null): MaterialDocument {
  return {
    id, case_id: 7, checklist_item_id: item ? 1 : null, item, filename: `${id}.png`, content_type: 'image/png', size: 10,
    sha256: '0', created_at: '2026-12-08T00:00:00Z', review_state, review_reason, reviewed_by: null, reviewed_at: null,
  }
}

function materials(docs: MaterialDocument[]): Materials {
  const item = (code: string, required: boolean) => ({
    code, name_zh: code, name_en: code, required, accepted_types: ['pdf', 'jpeg', 'png'], max_size: 1000, documents: 0,
    satisfied: false, status: 'missing' as const, document_id: null, review_reason: null,
  })
  return recompute({
    case_id: 7, number: 'CW1', state: 'in_session', matter_code: 'MZ-001', matter_name_zh: '', matter_name_en: '',
    applicant_name: '', applicant_id_masked: '', is_proxy: false, proxy_name: null, ticket: null,
    checklist: [item('id_card', true), item('photo', false)], checklist_complete: false, documents: docs,
  })
}

describe('checklist status', () => {
  it('is decided by the newest document', () => {
    expect(itemStatus([])).toBe('missing')
    expect(itemStatus([{ id: 1, review_state: 'pending' }])).toBe('pending')
    expect(itemStatus([{ id: 2, review_state: 'pending' }, { id: 1, review_state: 'returned' }])).toBe('pending')
    expect(itemStatus([{ id: 1, review_state: 'accepted' }, { id: 2, review_state: 'returned' }])).toBe('returned')
    expect(['missing', 'pending', 'accepted', 'returned'].map((s) => isSatisfied(s as never))).toEqual([false, true, true, false])
    expect(statusTag('returned')).toBe('danger')
    expect(statusTag('accepted')).toBe('success')
  })

  it('follows pushed notices: upload, return with a reason, re-upload, accept, removal', () => {
    let m = materials([])
    expect(m.checklist[0].status).toBe('missing')
    expect(m.checklist_complete).toBe(false)
    m = applyNotice(m, 'document.added', { case_id: 7, item: 'id_card', item_status: 'pending', document: doc(5, 'id_card', 'pending') })
    expect(m.checklist[0]).toMatchObject({ status: 'pending', documents: 1, document_id: 5, satisfied: true })
    expect(m.checklist_complete).toBe(true)
    m = applyNotice(m, 'document.reviewed', { case_id: 7, item: 'id_card', item_status: 'returned', document: doc(5, 'id_card', 'returned', '模糊') })
    expect(m.checklist[0]).toMatchObject({ status: 'returned', review_reason: '模糊', satisfied: false, documents: 1 })
    expect(m.checklist_complete).toBe(false)
    m = applyNotice(m, 'document.added', { case_id: 7, item: 'id_card', item_status: 'pending', document: doc(6, 'id_card', 'pending') })
    expect(m.checklist[0]).toMatchObject({ status: 'pending', documents: 2, document_id: 6, review_reason: null })
    m = applyNotice(m, 'document.reviewed', { case_id: 7, item: 'id_card', item_status: 'accepted', document: doc(6, 'id_card', 'accepted') })
    expect(m.checklist[0].status).toBe('accepted')
    // Another case's notice changes nothing; a removal brings the returned one back as the newest.
    expect(applyNotice(m, 'document.added', { case_id: 8, item: 'id_card', item_status: 'pending', document: doc(9, 'id_card', 'pending') })).toBe(m)
    m = applyNotice(m, 'document.removed', { case_id: 7, item: 'id_card', item_status: 'returned', document_id: 6 })
    expect(m.checklist[0]).toMatchObject({ status: 'returned', documents: 1 })
    expect(m.checklist[1].status).toBe('missing')
  })

  it('prechecks size and type as the server does', () => {
    const item = { accepted_types: ['pdf', 'jpeg'], max_size: 100 }
    expect(precheck(item, { size: 50, type: 'application/pdf' })).toBeNull()
    expect(precheck(item, { size: 50, type: 'image/jpeg' })).toBeNull()
    expect(precheck(item, { size: 500, type: 'application/pdf' })).toBe('tooLarge')
    expect(precheck(item, { size: 5, type: 'text/plain' })).toBe('badType')
  })
})

describe('snapshot constraints', () => {
  it('ask the chosen camera for its full resolution, never a 720p cap', () => {
    const c = fullResolution('cam-2') as Record<string, unknown>
    expect(c.deviceId).toEqual({ exact: 'cam-2' })
    expect(c.width).toEqual({ ideal: 4096 })
    expect(c.height).toEqual({ ideal: 3072 })
    expect(c.resizeMode).toBe('none')
    expect('deviceId' in fullResolution('')).toBe(false)
  })
})
