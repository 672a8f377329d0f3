// 邀请链接进入和现场踏勘手机页面的文字（由 zh-CN.ts 合并）。
export default {
  join: { title: '加入会话' },
  inspect: { title: '远程踏勘' },
}
