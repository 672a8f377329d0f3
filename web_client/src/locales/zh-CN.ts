// 简体中文（默认）。en.ts 必须有完全相同的键：src/locales/catalogue.spec.ts 检查两份目录和代码里用到的每个键。
import field from './field.zh-CN'

export default {
  ...field,
  app: { title: '云窗口', subtitle: '远程帮办 · 远程踏勘', language: '语言', logout: '退出登录', nav: '导航' },
  nav: { cases: '办件', window: '我的窗口', dashboard: '监控大屏' },
  login: { title: '登录', username: '用户名', password: '密码', submit: '登录', failed: '登录失败：{msg}', required: '请输入用户名和密码' },
  common: { refresh: '刷新', back: '返回', cancel: '取消', confirm: '确定', empty: '暂无数据', loading: '加载中…', error: '出错了：{msg}' },
  roles: { community_staff: '村（社区）代办员', clerk: '云窗口人员', supervisor: '中心负责人', admin: '管理员', expert: '专家', inspector: '踏勘人员', guest: '访客' },
  states: { draft: '草稿', submitted: '已提交', in_session: '办理中', accepted: '已受理', rejected: '已退回', completed: '已办结', cancelled: '已撤销' },
  ticketStates: { waiting: '排队中', called: '呼叫中', serving: '办理中', done: '已办完', no_show: '过号', transferred: '已转办', cancelled: '已取消' },
  windowStates: { open: '开放', paused: '暂停', closed: '关闭' },
  alertKinds: { wait_timeout: '等候超时', status: '排队预警' },
  recordingKinds: { participant: '参与方录像', screen: '屏幕共享录像', composite: '合成录像' },
  cases: {
    title: '办件列表', new: '新建办件', search: '搜索申请人、事项或编号', matter: '事项', applicant: '申请人', idNumber: '身份证号', phone: '联系电话',
    proxy: '代办', proxyName: '代办人', state: '状态', number: '办件编号', open: '打开', created: '办件已创建', empty: '还没有办件，点击“新建办件”开始',
    noMatch: '没有符合条件的办件', pickMatter: '请选择事项', missingFields: '请选择事项并填写申请人和身份证号', rejectedReason: '退回原因：{reason}',
  },
  materials: {
    title: '材料清单', required: '必交', optional: '可选', satisfied: '已齐', missing: '待上传', drop: '将文件拖到此处，或点击上传',
    uploading: '上传中 {p}%', uploaded: '已上传：{name}', tooLarge: '文件太大（不超过 {mb} MB）', badType: '文件类型不符，仅接受：{types}',
    snapshot: '拍照上传', takePhoto: '拍照', preview: '预览', documents: '已上传材料', submit: '提交材料', submitted: '材料已提交',
    noCamera: '无法打开摄像头：{msg}', incomplete: '还有必交材料未上传',
  },
  queue: {
    take: '取号', taken: '已取号：{number}', waiting: '排队中', position: '前面还有 {n} 位', estimate: '预计等待 {min} 分钟', ringing: '云窗口呼叫您！',
    answer: '接听', state: '号码状态', windows: '云窗口', signIn: '登录窗口', signedIn: '已登录窗口：{name}', callNext: '叫下一号', recall: '重呼', skip: '过号',
    transfer: '转办', nobody: '当前无人排队', line: '排队队列', called: '已呼叫 {number}', complete: '办结', colour: '状态', green: '正常', yellow: '黄色预警', red: '红色预警',
    recalled: '已重呼 {number}', skipped: '{number} 已过号', completed: '{number} 已办完', transferred: '{number} 已转办', unanswered: '{number} 无人接听，已放回队首',
    gaveUp: '{number} 多次无人接听，已记为过号', tidalClosed: '潮汐窗口已到时关闭', noWindows: '本部门还没有云窗口', tidal: '潮汐窗口', pause: '暂停叫号',
    resume: '恢复叫号', signOut: '退出窗口', current: '当前号码', toCall: '进入通话', number: '号码', place: '位次', estimateCol: '预计等待',
    figures: '排队 {n} 人 · 最长等待 {min} 分钟', toDepartment: '转至部门', cancel: '取消排队', cancelled: '已取消排队', missed: '未接听，号码已放回队首，请留意下次呼叫',
  },
  call: {
    title: '视频办理', join: '进入通话', leave: '离开', mic: '麦克风', camera: '摄像头', micOff: '静音', cameraOff: '关闭摄像头', share: '共享屏幕', stopShare: '停止共享',
    chat: '消息', send: '发送', chatPlaceholder: '输入消息', recording: '录制中', reconnecting: '网络中断，正在重新连接…', quality: '连接质量',
    good: '良好', fair: '一般', poor: '较差', unknown: '未知', you: '我', screen: '屏幕', ended: '通话已结束', waitingOthers: '等待对方加入…',
    accept: '受理', reject: '退回', reason: '退回原因', complete: '办结', devices: '设备', participants: '{n} 人在线', noDevices: '没有可用的摄像头和麦克风，只能观看和收听',
    chatFailed: '消息发送失败：{msg}',
  },
  casefile: {
    title: '办件档案', audit: '办理记录', recordings: '录像', play: '播放', noRecordings: '暂无录像', verified: '记录链校验通过', broken: '记录链校验失败',
    duration: '{s} 秒', noAudit: '暂无办理记录',
  },
  audit: {
    case_created: '创建办件', case_updated: '修改申请信息', case_transition: '办件状态变更', case_rerouted: '办件改派', case_legal_hold: '设置法律保全',
    document_uploaded: '上传材料', document_deleted: '删除材料', session_opened: '开启视频会话', session_ended: '结束视频会话', session_joined: '加入会话',
    session_left: '离开会话', chat_message: '发送消息', recording_started: '开始录制', recording_stopped: '停止录制', recording_saved: '录像已保存',
    recording_job_done: '录像整理完成', recording_purged: '录像到期删除', ticket_taken: '取号', ticket_called: '叫号', ticket_answered: '接听',
    ticket_recalled: '重呼', ticket_skipped: '过号', ticket_completed: '办完', ticket_cancelled: '取消排队', ticket_transferred: '转办', ticket_unanswered: '无人接听',
    invite_created: '发出邀请', invite_redeemed: '通过邀请加入', invite_revoked: '撤销邀请', appointment_booked: '预约', appointment_cancelled: '取消预约',
    appointment_checked_in: '预约签到', appointment_no_show: '预约爽约',
  },
  supervisor: {
    title: '监控大屏', alerts: '超时预警', ack: '确认', acked: '已确认', noAlerts: '暂无预警', tidal: '开潮汐窗口', until: '开放至', opened: '潮汐窗口已开放',
    noDepartments: '没有您负责的部门', today: '今日：黄色预警 {y} 次，红色预警 {r} 次，等候超时 {w} 次', waitTimeout: '{number} 已等候 {min} 分钟',
    statusAlert: '排队状态变为{colour}',
  },
}
