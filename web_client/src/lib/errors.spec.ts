import { afterEach, describe, expect, it } from 'vitest'
import { i18n } from '../i18n'
import { ApiError } from './api'
import { errorCode, errorText, fieldErrors, fieldProblems } from './errors'
import { ask } from './realtime'
import type { Socket } from 'socket.io-client'

afterEach(() => {
  i18n.global.locale.value = 'zh-CN'
})

const validation = new ApiError(422, 'validation_error', 'request body is not valid', {
  errors: [
    { loc: ['applicant_id_number'], message: 'Value error, not a valid 18-digit resident ID number', type: 'value_error' },
    { loc: ['applicant_phone'], message: "String should match pattern '^...$'", type: 'string_pattern_mismatch' },
    { loc: ['applicant_name'], message: 'Field required', type: 'missing' },
    { loc: ['proxy_name'], message: 'String should have at most 100 characters', type: 'string_too_long' },
    { loc: ['body', 'unit_code'], message: 'Field required', type: 'missing' },
    { loc: [], message: 'Value error, a proxy case needs proxy_name', type: 'value_error' },
  ],
})

describe('errorText', () => {
  it('words a server refusal by its code, never with the English message', () => {
    const e = new ApiError(401, 'invalid_credentials', 'wrong username or password')
    expect(errorText(e)).toBe('用户名或密码错误')
    i18n.global.locale.value = 'en'
    expect(errorText(e)).toBe('Wrong username or password')
  })

  it('words Socket.IO acks and connect errors the same way', () => {
    expect(errorText({ code: 'session_full', message: 'at most 8 participants' })).toBe('会话人数已满')
    expect(errorText({ ok: false, error: { code: 'not_joined', message: 'join a session first' } })).toBe('请先加入会话')
    const refused = Object.assign(new Error('connect with a token first'), { data: { code: 'auth_required', message: 'x' } })
    expect(errorText(refused)).toBe('请先登录')
  })

  it('falls back to a sentence in the interface language that names an unknown code', () => {
    const e = new ApiError(409, 'brand_new_code', 'something new went wrong')
    expect(errorText(e)).toBe('操作未成功（错误代码：brand_new_code，状态 409）')
    expect(errorText(e)).not.toContain('something')
    i18n.global.locale.value = 'en'
    expect(errorText({ code: 'brand_new_code', message: 'x' })).toBe('That did not work (error code: brand_new_code)')
  })

  it('words a network failure and browser device errors', () => {
    expect(errorText(new TypeError('Failed to fetch'))).toBe('网络不通，请检查网络后重试')
    expect(errorCode(new TypeError('Failed to fetch'))).toBe('network_error')
    expect(errorText(new DOMException('Permission denied', 'NotAllowedError'))).toContain('摄像头')
    expect(errorText(new Error('Some English text'))).toBe('操作未成功（错误代码：Error）')
  })
})

describe('field errors', () => {
  it('finds the field of each validation problem, leaving out whole-form ones', () => {
    expect(fieldProblems(validation).map((p) => p.field)).toEqual(['applicant_id_number', 'applicant_phone', 'applicant_name', 'proxy_name', 'unit_code'])
    expect(fieldProblems(new ApiError(409, 'conflict', 'x'))).toEqual([])
  })

  it('puts a translated message on each field', () => {
    const zh = fieldErrors(validation)
    expect(zh.applicant_id_number).toBe('身份证号不正确：须为 18 位，校验位须正确')
    expect(zh.applicant_phone).toBe('电话号码格式不正确')
    expect(zh.applicant_name).toBe('请填写申请人姓名')
    expect(zh.proxy_name).toBe('太长')
    expect(zh.unit_code).toBe('必填')
    i18n.global.locale.value = 'en'
    expect(fieldErrors(validation).applicant_phone).toBe('Not a valid phone number')
  })
})

describe('Socket.IO refusals through ask()', () => {
  const socket = (answer: () => Promise<unknown>) => ({ timeout: () => ({ emitWithAck: answer }) }) as unknown as Socket

  it('turns a refused ack into words by its code', async () => {
    const e = await ask(socket(async () => ({ ok: false, error: { code: 'room_full', message: 'room is full' } })), 'session.join', {}).catch((x) => x)
    expect(errorCode(e)).toBe('room_full')
    expect(errorText(e)).toBe('会话人数已满')
  })

  it('turns a missing ack into the timeout code, not socket.io English', async () => {
    const e = await ask(socket(() => Promise.reject(new Error('operation has timed out'))), 'chat.send', {}, 10).catch((x) => x)
    expect(errorCode(e)).toBe('timeout')
    expect(errorText(e)).toBe('服务器响应超时，请重试')
  })
})
