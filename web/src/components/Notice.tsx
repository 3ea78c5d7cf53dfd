// Empty states, problems and hints, all in one plain shape.

import type { ReactNode } from 'react';

interface NoticeProps {
  tone: 'empty' | 'error' | 'warning' | 'info';
  title?: string;
  children?: ReactNode;
  testId?: string;
}

export function Notice({ tone, title, children, testId }: NoticeProps) {
  return (
    <div
      className={`notice notice-${tone}`}
      role={tone === 'error' ? 'alert' : 'status'}
      data-testid={testId}
    >
      {title ? <p className="notice-title">{title}</p> : null}
      {children ? <div className="notice-body">{children}</div> : null}
    </div>
  );
}
