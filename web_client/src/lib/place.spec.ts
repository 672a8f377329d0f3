import { describe, expect, it } from 'vitest'
import { placeOf, type Org } from './place'

const org: Org = {
  units: [
    { id: 1, code: 'D01', name_zh: '区云办中心', name_en: 'District Cloud Centre' },
    { id: 2, code: 'T01', name_zh: '高桥镇便民服务中心', name_en: 'Gaoqiao Town Centre' },
  ],
  departments: [
    { id: 10, unit_id: 1, name_zh: '区民政局', name_en: 'District Civil Affairs Bureau' },
    { id: 11, unit_id: 2, name_zh: '高桥镇民政办', name_en: 'Gaoqiao Civil Affairs Office' },
  ],
  windows: [{ id: 5, name_zh: '民政云窗口1', name_en: 'Civil Affairs Cloud Window 1', clerk_user_id: 3, clerk_name: '陈晓燕' }],
}

describe('placeOf', () => {
  it('names the department and centre a waiting ticket is queued at', () => {
    expect(placeOf(org, { department_id: 11, window_id: null }, 'zh-CN')).toEqual({ department: '高桥镇民政办', centre: '高桥镇便民服务中心', window: null, clerk: null })
    expect(placeOf(org, { department_id: 10, window_id: null }, 'en')?.centre).toBe('District Cloud Centre')
  })
  it('adds the window and the clerk who called it', () => {
    expect(placeOf(org, { department_id: 10, window_id: 5, clerk_user_id: 3 }, 'zh-CN')).toEqual({ department: '区民政局', centre: '区云办中心', window: '民政云窗口1', clerk: '陈晓燕' })
    // Another clerk signed in at the window since: do not name the wrong person.
    expect(placeOf(org, { department_id: 10, window_id: 5, clerk_user_id: 4 }, 'zh-CN')?.clerk).toBeNull()
  })
  it('says nothing rather than something wrong for an unknown department', () => {
    expect(placeOf(org, { department_id: 99, window_id: null }, 'zh-CN')).toBeNull()
  })
})
